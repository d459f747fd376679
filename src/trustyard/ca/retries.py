"""A request sent again because its answer never came (a reset connection, a crashed replica):
the rules that make a bootstrap redemption and a renewal idempotent, for ``Authority``.

- A renewal retried with the same CSR key within ``RENEWAL_RETRY_WINDOW`` gets the certificate
  that renewal produced (``renewal_again``).
- A redemption retried with the same token and CSR key gets the certificate the token bought
  (``store.redemptions.redeem_again`` finds it; ``redemption_again`` audits it).
- An intent still ``pending`` is being signed, unless it is older than ``PENDING_INTENT_BOUND``:
  then a crash cut it, and it is released and the request issued anew
  (``release_cut_renewal``; ``redeem_again`` for tokens); a younger one answers 503
  ``redemptionInProgress`` with the seconds left as Retry-After.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography import x509

from ..store.records import AuditEvent, CertRecord, RedemptionInProgress, superseded
from .ledger import Ledger

RENEWAL_RETRY_WINDOW = timedelta(minutes=5)
"""How long a renewal may be asked for again (same certificate, same CSR key) and get the same answer."""

PENDING_INTENT_BOUND = timedelta(seconds=10)
"""How long an intent may stay ``pending``: signing takes milliseconds, so one older than this was
cut by a crash. A retry of its redemption (or renewal) then releases it and issues anew, and the
``serve`` sweep (``ca.intent_sweep``) releases the ones nobody retries; a younger one is being
signed, and a retry is told to come back after Retry-After."""


def in_progress(what: str, requested_at: datetime, stale_before: datetime) -> RedemptionInProgress:
    return RedemptionInProgress(f"{what} is being signed: send the same request again after Retry-After",
                                retry_after=max(1, math.ceil((requested_at - stale_before).total_seconds())))


def release_cut_renewal(store: Ledger, now: datetime, current: CertRecord) -> bool:
    """Whether the renewal of ``current`` was left ``pending`` by a crash and is now released
    (``current`` may renew again); 503 ``redemptionInProgress`` while it may still be signing."""
    child = store.renewal_of(current.serial)
    if child is None or child.status != "pending":
        return False
    stale_before = now - PENDING_INTENT_BOUND
    if child.requested_at >= stale_before:
        raise in_progress(f"the renewal of {current.serial}", child.requested_at, stale_before)
    return bool(store.release_pending(stale_before, child.serial))


def renewal_again(store: Ledger, now: datetime, current: CertRecord, spki_der: bytes,
                  spki_of: Callable[[x509.Certificate], bytes]) -> CertRecord:
    """The renewal of ``current`` again, for a client that did not get the answer: only for the
    same CSR key (``spki_der``) and within ``RENEWAL_RETRY_WINDOW`` of that renewal; audited."""
    assert current.superseded_by is not None
    child = store.renewal_of(current.serial)
    if (child is None or child.status != "issued" or child.der is None
            or now - child.requested_at > RENEWAL_RETRY_WINDOW
            or spki_of(x509.load_der_x509_certificate(child.der)) != spki_der):
        raise superseded(current.serial, current.superseded_by)
    store.audit(AuditEvent(actor=child.provisioner, action="certificate.renew.retry", target=child.serial,
                           detail={"renewed_from": current.serial}))
    return child


def redemption_again(store: Ledger, earlier: CertRecord) -> CertRecord:
    """The certificate a bootstrap token bought, handed out again (audited)."""
    store.audit(AuditEvent(actor=earlier.provisioner, action="certificate.issue.retry", target=earlier.serial,
                           detail={"subject": earlier.subject}))
    return earlier
