"""Plain records the store reads and writes, and the ledger's refusals that callers handle."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import Code, Conflict, Overloaded, Unauthorized
from ..units import format_time


def utc(value: datetime | None) -> datetime | None:
    """A time read back from the database, in UTC (SQLite keeps UTC wall times without a zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Intent:
    """What is about to be signed, recorded (with the serial reserved) before signing."""

    serial: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    requested_at: datetime
    renewed_from: str | None = None
    token_jti: str | None = None
    token_expires_at: datetime | None = None
    crl_shard: int | None = None  # the CRL shard its CRL Distribution Points name, if any
    spki_sha256: str | None = None  # the CSR key's SubjectPublicKeyInfo, SHA-256 hex: a redemption's retry matches it


@dataclass(frozen=True)
class CertRecord:
    serial: str
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    status: str  # pending | issued | failed | revoked
    not_before: datetime
    not_after: datetime
    requested_at: datetime
    der: bytes | None
    fingerprint_sha256: str | None
    renewed_from: str | None
    revoked_at: datetime | None
    revocation_reason: str | None
    superseded_by: str | None = None  # the certificate that renewed this one (it renews only once)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "provisioner": self.provisioner,
            "subject": self.subject,
            "sans": list(self.sans),
            "status": self.status,
            "not_before": format_time(self.not_before),
            "not_after": format_time(self.not_after),
            "requested_at": format_time(self.requested_at),
            "fingerprint_sha256": self.fingerprint_sha256,
            "renewed_from": self.renewed_from,
            "revoked_at": format_time(self.revoked_at) if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
            "superseded_by": self.superseded_by,
        }


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to what, with which outcome and why."""

    actor: str
    action: str  # token.mint | certificate.issue | certificate.renew[.retry] | certificate.revoke | request.deny
    target: str
    outcome: str = "ok"  # ok | denied
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "at": format_time(self.at), "actor": self.actor, "action": self.action,
            "target": self.target, "outcome": self.outcome, "detail": self.detail,
            "prev_hash": self.prev_hash, "hash": self.hash,
        }


def cert_record(row: Any) -> CertRecord:
    """A ``certificates`` row (columns as attributes, times as datetimes) as a record."""
    return CertRecord(
        serial=row.serial, provisioner=row.provisioner, subject=row.subject, sans=tuple(json.loads(row.sans)),
        status=row.status, not_before=utc(row.not_before), not_after=utc(row.not_after),  # type: ignore[arg-type]
        requested_at=utc(row.requested_at), der=row.der, fingerprint_sha256=row.fingerprint_sha256,  # type: ignore[arg-type]
        renewed_from=row.renewed_from, revoked_at=utc(row.revoked_at), revocation_reason=row.revocation_reason,
        superseded_by=row.superseded_by,
    )


def audit_entry(row: Any) -> AuditEntry:
    """An ``audit_log`` row (columns as attributes, ``at`` a datetime) as an entry."""
    return AuditEntry(seq=row.seq, at=utc(row.at), actor=row.actor, action=row.action,  # type: ignore[arg-type]
                      target=row.target, outcome=row.outcome, detail=json.loads(row.detail),
                      prev_hash=row.prev_hash, hash=row.hash)


class SerialCollision(Exception):
    """The random serial is already reserved (astronomically rare): draw another."""


def superseded(serial: str, by: str) -> Conflict:
    """The refusal of a second renewal of ``serial``, which ``by`` already renewed."""
    return Conflict(f"certificate {serial} was already renewed (by {by}): a certificate renews once; renew "
                    "the newer certificate, or bootstrap again with a new token", code=Code.SUPERSEDED,
                    superseded_by=by)


class TokenRedeemed(Unauthorized):
    """The bootstrap token was redeemed before: a replay, unless the authority finds it is a retry of
    that redemption (the same CSR key, ``SqlStore.redeem_again``)."""

    code = Code.TOKEN_REPLAYED

    def __init__(self, detail: str = "this token was already used: bootstrap tokens are single-use") -> None:
        super().__init__(detail)


class RedemptionInProgress(Overloaded):
    """The same redemption (or renewal) is being signed right now, by this replica or another: send
    it again after ``retry_after`` seconds; by then it is issued (and handed out again) or, if a
    crash cut it, released and issued anew."""

    code = Code.REDEMPTION_IN_PROGRESS
    title = "In progress"
