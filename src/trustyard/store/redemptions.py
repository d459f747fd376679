"""Redemptions cut short: a bootstrap token sent again, and intents a crash left ``pending``.

A redemption (``SqlStore.record_intent``) spends the token and reserves a ``pending`` row in one
transaction; the signed certificate replaces the row's ``pending`` afterwards. A process killed
between the two leaves the token spent and the row ``pending`` forever, and a client whose
answer was lost holds a spent token. Both are repaired here, under the token's lock:

- ``redeem_again``: the same token with a CSR of the same key gets the certificate issued for it
  (the authority hands it out again), or, when the earlier attempt never finished (``failed``,
  or ``pending`` for longer than a signing can take), a new intent under the same redemption. A
  ``pending`` row younger than that is being signed right now: ``RedemptionInProgress`` (503).
- ``release_pending``: every intent ``pending`` since before a bound becomes ``failed``, the
  certificate it renews may renew again, and each release is audited.

Signing takes milliseconds, so the bound (``ca.retries.PENDING_INTENT_BOUND``) can be short:
an intent that old was cut by a crash, and releasing it can race no live signer, because a
signer's ``record_issued`` only completes a row that is still ``pending``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .records import AuditEvent, CertRecord, Intent, RedemptionInProgress, TokenRedeemed, cert_record
from .schema import certificates, used_tokens

if TYPE_CHECKING:
    from .sql import SqlStore


def redeem_again(store: SqlStore, intent: Intent, stale_before: datetime) -> CertRecord | None:
    """``intent`` sent with a token already redeemed: the certificate issued for that token to
    the same key (hand it out again), or None once ``intent`` is recorded in place of an attempt
    that never finished. Raises ``TokenRedeemed`` (another key, a revoked certificate, a
    redemption older than this ledger's keys), ``RedemptionInProgress`` (it is being signed)."""
    assert intent.token_jti is not None
    with store.transaction(durable=False) as conn:
        _lock_token(store, conn, intent.token_jti)
        rows = conn.execute(select(certificates).where(certificates.c.token_jti == intent.token_jti)
                            .order_by(certificates.c.requested_at.desc(), certificates.c.serial)).fetchall()
        if not rows or rows[0].spki_sha256 is None or rows[0].spki_sha256 != intent.spki_sha256:
            raise TokenRedeemed()
        done = next((r for r in rows if r.status in ("issued", "revoked")), None)
        if done is not None:
            if done.status == "revoked":
                raise TokenRedeemed(f"this token was already used, for certificate {done.serial}, which is "
                                    "revoked: bootstrap again with a new token")
            return cert_record(done)
        latest = cert_record(rows[0])
        if latest.status == "pending":
            if latest.requested_at >= stale_before:
                wait = (latest.requested_at - stale_before).total_seconds()
                raise RedemptionInProgress("this token's certificate is being signed: send the same request "
                                           "again after Retry-After", retry_after=max(1, math.ceil(wait)))
            _release(store, conn, [latest.serial], f"token {intent.token_jti} redeemed again")
        store.insert_intent(conn, intent)
    return None


def release_pending(store: SqlStore, before: datetime, serial: str | None = None) -> list[str]:
    """Mark every intent ``pending`` since before ``before`` (or only ``serial``) ``failed``, in one
    transaction, audited; the serials released."""
    query = select(certificates.c.serial).where(certificates.c.status == "pending",
                                                certificates.c.requested_at < before)
    if serial is not None:
        query = query.where(certificates.c.serial == serial)
    query = query.order_by(certificates.c.serial)
    with store.transaction(write=False) as conn:  # most rounds find nothing: no write lock for them
        if not conn.execute(query.limit(1)).first():
            return []
    with store.transaction() as conn:
        serials = [r.serial for r in conn.execute(query).fetchall()]
        return _release(store, conn, serials, "pending since before the bound: cut by a crash")


def _release(store: SqlStore, conn: Connection, serials: list[str], why: str) -> list[str]:
    released = []
    for serial in serials:  # one by one: each is claimed from ``pending`` (another replica may be here too)
        claimed = conn.execute(update(certificates)
                               .where(certificates.c.serial == serial, certificates.c.status == "pending")
                               .values(status="failed")).rowcount == 1
        if not claimed:
            continue
        conn.execute(update(certificates).where(certificates.c.superseded_by == serial).values(superseded_by=None))
        store.append_audit(conn, AuditEvent(actor="ca", action="certificate.release", target=serial,
                                            detail={"reason": why}))
        released.append(serial)
    return released


def _lock_token(store: SqlStore, conn: Connection, jti: str) -> None:
    """Serialize the retries of one redemption (on SQLite every write already is)."""
    if not store.is_sqlite:
        conn.execute(select(used_tokens.c.jti).where(used_tokens.c.jti == jti).with_for_update())
