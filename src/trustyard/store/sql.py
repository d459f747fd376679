"""SqlStore: the certificate ledger, one-time token redemptions and the hash-chained audit log,
on the database engine (``engine.Database``: transactions, units, the durable flush, the
write lock, compiled plans). Only the engine's public API is used here.

The authority sees this class through ``ca.ledger.Ledger``, a protocol of what it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..errors import Code, Conflict, Forbidden, NotFound, Unauthorized
from . import audit as chain
from . import crls as crl_entries
from . import redemptions, refusals
from .engine import Database
from .records import (
    AuditEntry,
    AuditEvent,
    CertRecord,
    Intent,
    RedemptionInProgress,
    SerialCollision,
    TokenRedeemed,
    audit_entry,
    cert_record,
    superseded,
    utc_now,
)
from .schema import audit_head, audit_log, certificates, used_tokens
from .seal import AuditSeal

__all__ = ["SerialCollision", "SqlStore", "open_store", "superseded"]


class SqlStore(Database):
    """The certificate ledger and the audit log (SQLite by default, PostgreSQL by URL)."""

    # -- issuance ---------------------------------------------------------------------------

    def record_intent(self, intent: Intent) -> None:
        """Reserve the serial, redeem the token (if any) and claim the renewed certificate (if
        any) in one transaction: of two renewals of one certificate, only one gets this far. A
        token redeemed before raises ``TokenRedeemed`` (``redeem_again`` tells a retry from a replay)."""
        alone = intent.token_jti is None and intent.renewed_from is None
        with self.transaction(durable=False, one_statement=alone) as conn:
            if intent.token_jti is not None:
                try:
                    self._redeem(conn, intent.token_jti, "bootstrap", intent.token_expires_at or intent.not_after)
                except IntegrityError:
                    raise TokenRedeemed() from None
            self.insert_intent(conn, intent)

    def insert_intent(self, conn: Connection, intent: Intent) -> None:
        """The ``pending`` row of ``intent`` (and its claim on the certificate it renews) in ``conn``'s
        transaction; ``SerialCollision`` when the serial is taken."""
        try:
            self.run(conn, _INSERT_INTENT, dict(
                serial=intent.serial, provisioner=intent.provisioner, subject=intent.subject,
                sans=json.dumps(list(intent.sans)), status="pending", requested_at=intent.requested_at,
                not_before=intent.not_before, not_after=intent.not_after, renewed_from=intent.renewed_from,
                token_jti=intent.token_jti, crl_shard=intent.crl_shard, spki_sha256=intent.spki_sha256,
            ))
        except IntegrityError:
            raise SerialCollision(intent.serial) from None
        if intent.renewed_from is not None:
            self._claim_renewal(conn, intent.renewed_from, intent.serial)

    def redeem_again(self, intent: Intent, stale_before: datetime) -> CertRecord | None:
        """``intent`` with a token redeemed before: the certificate issued for it to the same key,
        or None once ``intent`` replaces an attempt that never finished (``store.redemptions``)."""
        return redemptions.redeem_again(self, intent, stale_before)

    def release_pending(self, before: datetime, serial: str | None = None) -> list[str]:
        """Intents ``pending`` since before ``before`` (a crash cut them) become ``failed``, audited."""
        return redemptions.release_pending(self, before, serial)

    def _claim_renewal(self, conn: Connection, parent: str, child: str) -> None:
        """Mark ``parent`` superseded by ``child``; refused unless it is issued and not yet renewed."""
        if self.run(conn, _CLAIM, {"serial_": parent, "b_child": child}).rowcount == 1:
            return
        row = self.run(conn, _GET, {"serial_": parent}).first()
        if row is None:
            raise NotFound(f"no certificate with serial {parent}")
        if row.status == "revoked":
            raise Forbidden(f"certificate {parent} is revoked and can never be renewed", code=Code.REVOKED)
        if row.superseded_by is not None:
            raise superseded(parent, row.superseded_by)
        raise Conflict(f"certificate {parent} is {row.status}, not issued", code=Code.CONFLICT)

    def renewal_of(self, serial: str) -> CertRecord | None:
        """The certificate that renewed ``serial`` (its ``superseded_by``), if any."""
        with self.transaction(write=False) as conn:
            row = self.run(conn, _GET, {"serial_": serial}).first()
            child = self.run(conn, _GET, {"serial_": row.superseded_by}).first() if row and row.superseded_by else None
        return cert_record(child) if child else None

    def use_token(self, jti: str, kind: str, expires_at: datetime) -> None:
        """Redeem a one-time credential (a renewal or revocation proof) on its own."""
        try:
            with self.transaction(durable=False) as conn:
                self._redeem(conn, jti, kind, expires_at)
        except IntegrityError:
            raise Unauthorized(f"this {kind} proof was already used", code=Code.TOKEN_REPLAYED) from None

    def _redeem(self, conn: Connection, jti: str, kind: str, expires_at: datetime) -> None:
        self.run(conn, _INSERT_TOKEN, {"jti": jti, "kind": kind, "used_at": utc_now(), "expires_at": expires_at})

    def purge_used_tokens(self, expired_before: datetime) -> int:
        """Forget the redeemed credentials that expired before ``expired_before``: the
        signature check refuses them before their ``jti`` is looked up, so their rows no longer
        stop a replay. The ledger keeps its own ``token_jti``. The number of rows deleted."""
        with self.transaction(durable=False) as conn:
            return conn.execute(delete(used_tokens).where(used_tokens.c.expires_at < expired_before)).rowcount

    def record_issued(self, serial: str, der: bytes, fingerprint: str, event_: AuditEvent,
                      issuer: str | None = None) -> bool:
        """Store the signed certificate (before anyone receives it) and audit it, atomically;
        ``issuer`` is the signing CA certificate's SHA-256 fingerprint.

        False when it was revoked while being signed (a key-compromise revocation of the
        certificate it renews): it is stored, stays revoked, and must not be handed out.
        ``RedemptionInProgress`` (a retryable 503) when its intent was released while it was being
        signed (``store.redemptions``: the signing outlived the bound): it is stored on the
        ``failed`` row, never handed out, and the client's retry issues anew."""
        params = {"serial_": serial, "b_der": der, "b_fingerprint": fingerprint, "b_issuer": issuer}
        released = False
        with self.transaction() as conn:
            issued = self.run(conn, _MARK_ISSUED, params).rowcount == 1
            if not issued:
                self.run(conn, _STORE_DER, params)
                row = self.run(conn, _GET, {"serial_": serial}).first()
                released = row is not None and row.status == "failed"
                why = "released_while_signing" if released else "revoked_while_signing"
                event_ = replace(event_, outcome="denied", detail={**event_.detail, why: True})
            self.append_audit(conn, event_)
        if released:
            raise RedemptionInProgress(f"certificate {serial} took longer to sign than the CA waits for a signing, "
                                       "and was released meanwhile: send the same request again", retry_after=1)
        return issued

    def record_failed(self, serial: str) -> None:
        """The signing failed: the serial is spent, and the certificate it renews may renew again."""
        with self.transaction() as conn:
            conn.execute(update(certificates).where(certificates.c.serial == serial).values(status="failed"))
            conn.execute(update(certificates).where(certificates.c.superseded_by == serial).values(superseded_by=None))

    def revoke(self, serial: str, reason: str, event_: AuditEvent, cascade: bool = False) -> CertRecord:
        """Revoke ``serial``; with ``cascade`` also every certificate renewed from it, transitively,
        in the same transaction and under the same audit entry (its ``descendants`` list).

        A certificate already revoked for another reason may be revoked again with ``cascade``
        (RFC 5280 lets a reason become keyCompromise): otherwise whoever revoked it first, the
        key holder included, would keep its renewals out of reach."""
        now = utc_now()
        with self.transaction() as conn:
            result = conn.execute(
                update(certificates)
                .where(certificates.c.serial == serial, certificates.c.status == "issued")
                .values(status="revoked", revoked_at=now, revocation_reason=reason)
            )
            if result.rowcount != 1:
                row = conn.execute(select(certificates).where(certificates.c.serial == serial)).first()
                if row is None:
                    raise NotFound(f"no certificate with serial {serial}")
                if not (cascade and row.status == "revoked" and row.revocation_reason != reason):
                    raise Conflict(f"certificate {serial} is {row.status}, not issued", code=Code.ALREADY_REVOKED
                                   if row.status == "revoked" else Code.CONFLICT)
                conn.execute(update(certificates).where(certificates.c.serial == serial)
                             .values(revocation_reason=reason))
            descendants: list[str] = []
            if cascade:
                descendants = self._revoke_descendants(conn, serial, reason, now)
                event_ = replace(event_, detail={**event_.detail, "descendants": descendants})
            row = conn.execute(select(certificates).where(certificates.c.serial == serial)).one()
            crl_entries.mark_dirty(conn, [serial, *descendants], now)  # their CRLs are due: no CRL built here
            self.append_audit(conn, replace(event_, detail={**event_.detail, "sans": json.loads(row.sans)}))
        return cert_record(row)

    def _revoke_descendants(self, conn: Connection, serial: str, reason: str, now: datetime) -> list[str]:
        """Revoke every issued or still-signing certificate renewed from ``serial``, at any depth;
        the serials revoked, generation by generation."""
        revoked: list[str] = []
        seen, frontier = {serial}, [serial]
        while frontier:
            rows = conn.execute(select(certificates.c.serial, certificates.c.status)
                                .where(certificates.c.renewed_from.in_(frontier))
                                .order_by(certificates.c.requested_at, certificates.c.serial)).fetchall()
            frontier = [r.serial for r in rows if r.serial not in seen]
            seen.update(frontier)
            live = [r.serial for r in rows if r.status in ("issued", "pending") and r.serial in frontier]
            if live:
                conn.execute(update(certificates)
                             .where(certificates.c.serial.in_(live), certificates.c.status.in_(("issued", "pending")))
                             .values(status="revoked", revoked_at=now, revocation_reason=reason))
                revoked += live
        return revoked

    # -- reads ------------------------------------------------------------------------------

    def get(self, serial: str) -> CertRecord | None:
        with self.transaction(write=False) as conn:
            row = self.run(conn, _GET, {"serial_": serial}).first()
        return cert_record(row) if row else None

    def list(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[CertRecord]:
        query = select(certificates).order_by(certificates.c.requested_at, certificates.c.serial)
        if status:
            query = query.where(certificates.c.status == status)
        with self.transaction(write=False) as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).fetchall()
        return [cert_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.transaction(write=False) as conn:
            rows = conn.execute(select(certificates.c.status, func.count()).group_by(certificates.c.status))
            return {status: n for status, n in rows}

    # -- audit ------------------------------------------------------------------------------

    def audit(self, event_: AuditEvent) -> None:
        with self.transaction() as conn:
            self.append_audit(conn, event_)

    def append_audit(self, conn: Connection, event_: AuditEvent) -> None:
        """Append ``event_`` to the audit chain inside the caller's transaction ``conn``, so the
        entry commits (or rolls back) with the change it records."""
        query = _HEAD if self.is_sqlite else _HEAD_FOR_UPDATE
        head = self.run(conn, query).first()
        if head is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(audit_head).values(id=1, seq=0, hash=chain.GENESIS))
            except IntegrityError:
                pass  # another replica created it first
            head = self.run(conn, query).one()
        key = self.seal.ensure(head.seq, head.hash)[0] if self.seal is not None else None
        entry = chain.next_entry(head.seq, head.hash, event_, utc_now(), key)
        self.run(conn, _INSERT_AUDIT, entry)
        self.run(conn, _MOVE_HEAD, {"b_seq": entry["seq"], "b_hash": entry["hash"]})
        self.appended(conn, entry["seq"], entry["hash"])
        self.recorded(conn, event_)

    def audit_entries(self, since: int = 0, limit: int | None = None) -> Iterator[AuditEntry]:
        query = select(audit_log).where(audit_log.c.seq > since).order_by(audit_log.c.seq)
        if limit:
            query = query.limit(limit)
        with self.transaction(write=False) as conn:
            rows = conn.execute(query).fetchall()
        return map(audit_entry, rows)

    def verify_audit(self) -> chain.ChainReport:
        """The chain, the head row and, with the seal, every keyed hash and the signed checkpoint
        (read first: it may lag the log, never lead it). Head and entries come from one snapshot,
        so appends running meanwhile raise no false alarm."""
        loaded = self.seal.load() if self.seal is not None else None
        checkpoint, why = self.seal.read_checkpoint() if self.seal is not None else (None, None)
        with self.snapshot() as conn:
            head = conn.execute(_HEAD).first()
            rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).fetchall()
        key, keyed_from = loaded if loaded is not None else (None, 1)
        return chain.verify_chain(map(audit_entry, rows), (head.seq, head.hash) if head else None, key, keyed_from,
                                  checkpoint, why)

    # -- refusals ---------------------------------------------------------------------------

    def note_refusal(self, source: str, reason: str, message: str = "") -> None:
        """Count one refusal of ``source`` for ``reason`` in aggregate (see ``refusals.note``)."""
        refusals.note(self, source, reason, message=message)


# Statements built once: SQLAlchemy then only binds parameters on the hot path.
_INSERT_INTENT = insert(certificates)
_INSERT_TOKEN = insert(used_tokens)
_INSERT_AUDIT = insert(audit_log)
_GET = select(certificates).where(certificates.c.serial == bindparam("serial_"))
_MARK_ISSUED = (update(certificates)
                .where(certificates.c.serial == bindparam("serial_"), certificates.c.status == "pending")
                .values(status="issued", der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fingerprint"),
                        issuer_sha256=bindparam("b_issuer")))
_STORE_DER = (update(certificates).where(certificates.c.serial == bindparam("serial_"))
              .values(der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fingerprint"),
                      issuer_sha256=bindparam("b_issuer")))
_CLAIM = (update(certificates)
          .where(certificates.c.serial == bindparam("serial_"), certificates.c.status == "issued",
                 certificates.c.superseded_by.is_(None))
          .values(superseded_by=bindparam("b_child")))
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1).values(seq=bindparam("b_seq"), hash=bindparam("b_hash"))


def open_store(url: str, migrate: bool = True, seal: AuditSeal | None = None) -> SqlStore:
    store = SqlStore(url, seal)
    if migrate:
        store.migrate()
    return store
