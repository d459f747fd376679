"""What the authority needs of its storage: the certificate ledger and the audit log; and of the
emergencies (``Guard``, implemented by ``ca.emergency.Emergencies`` on the SQL store).

``Authority`` is written against this protocol, not against a storage class; ``store.SqlStore``
is the implementation the composition roots (CLI, app factory) hand it. A ledger keeps the
records of ``trustyard.store.records`` and raises its refusals (``SerialCollision``,
``superseded``, ``Conflict``...) as documented on each method.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..store.records import AuditEvent, CertRecord, Intent


class Ledger(Protocol):
    def record_intent(self, intent: Intent) -> None:
        """Reserve ``intent.serial``, redeem its token and claim the certificate it renews, in one
        transaction. Raises ``SerialCollision`` (draw another serial), ``Unauthorized``
        (``TokenRedeemed``, ``tokenReplayed``), ``NotFound``, ``Forbidden`` (``revoked``) or ``Conflict``
        (``superseded``: renewed already)."""
        ...

    def redeem_again(self, intent: Intent, stale_before: datetime) -> CertRecord | None:
        """``intent`` whose token was redeemed before (``record_intent`` raised ``TokenRedeemed``):
        the certificate issued for that token to the same CSR key, to hand out again; or None once
        ``intent`` is recorded in place of an attempt that never finished (``failed``, or
        ``pending`` since before ``stale_before``). Raises ``TokenRedeemed`` (a replay: another
        key, a revoked certificate) or ``RedemptionInProgress`` (503: it is being signed)."""
        ...

    def release_pending(self, before: datetime, serial: str | None = None) -> list[str]:
        """Mark intents ``pending`` since before ``before`` (only ``serial``, if given) ``failed``,
        releasing what they renew, audited; the serials released."""
        ...

    def record_issued(self, serial: str, der: bytes, fingerprint: str, event_: AuditEvent,
                      issuer: str | None = None) -> bool:
        """Store the signed certificate and audit it, durably, before anyone receives it; False
        when it was revoked while being signed (it must not be handed out);
        ``RedemptionInProgress`` when its intent was released meanwhile (the client sends it again).
        ``issuer``: the signing CA certificate's SHA-256 fingerprint (what a rotation's retiring
        gate counts by)."""
        ...

    def record_failed(self, serial: str) -> None:
        """The signing failed: the serial is spent, the certificate it renews may renew again."""
        ...

    def revoke(self, serial: str, reason: str, event_: AuditEvent, cascade: bool = False) -> CertRecord:
        """Revoke ``serial`` (and with ``cascade`` its renewals) under one audit entry."""
        ...

    def use_token(self, jti: str, kind: str, expires_at: datetime) -> None:
        """Redeem a one-time proof; ``Unauthorized`` (``tokenReplayed``) when it was used."""
        ...

    def renewal_of(self, serial: str) -> CertRecord | None:
        """The certificate that renewed ``serial``, if any."""
        ...

    def get(self, serial: str) -> CertRecord | None:
        ...

    def audit(self, event_: AuditEvent) -> None:
        """Append one entry to the audit log, durably."""
        ...

    def note_refusal(self, source: str, reason: str, message: str = "") -> None:
        """Count one refusal of a caller that never authenticated, in aggregate (not audited)."""
        ...


class Guard(Protocol):
    """What an emergency asks of issuance, ACME Renewal Information and check-ins."""

    def check_issue(self, spki: str, renewed_from: str | None) -> None:
        """Raise ``Forbidden`` for a CSR key (SPKI SHA-256, hex) or a renewal an emergency refuses."""
        ...

    def renew_now(self, serial: str) -> bool:
        """Whether an emergency replaces ``serial``."""
        ...

    def on_checkin(self, record: CertRecord, endpoint_serial: str | None) -> bool:
        """A check-in authenticated by ``record``: True when its holder must renew now."""
        ...
