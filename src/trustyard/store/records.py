"""Plain records the store reads and writes, and the ledger's refusals that callers handle."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import Code, Conflict
from ..units import format_time


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


class SerialCollision(Exception):
    """The random serial is already reserved (astronomically rare): draw another."""


def superseded(serial: str, by: str) -> Conflict:
    """The refusal of a second renewal of ``serial``, which ``by`` already renewed."""
    return Conflict(f"certificate {serial} was already renewed (by {by}): a certificate renews once; renew "
                    "the newer certificate, or bootstrap again with a new token", code=Code.SUPERSEDED,
                    superseded_by=by)
