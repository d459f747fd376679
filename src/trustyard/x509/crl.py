"""Revocation lists (RFC 5280 section 5), built and signed: pure, no I/O.

A shard's CRL names its own URL in a critical Issuing Distribution Point, the same URI the
certificates in that shard carry in their CRL Distribution Points: a relying party that
checks the scope (OpenSSL does) never takes one shard's CRL as the whole list of another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from .keys import PrivateKey, signature_hash
from .profiles import _aki

REASON_FLAGS = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
"""Ledger reasons as CRL reason codes; ``unspecified`` is written as no reasonCode (RFC 5280 5.3.1)."""


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str | None = None


def sign_crl(issuer: x509.Certificate, key: PrivateKey, url: str, number: int, this_update: datetime,
             next_update: datetime, revoked: Iterable[Revoked]) -> x509.CertificateRevocationList:
    """The CRL at ``url`` of ``issuer``, which issues end-entity certificates only."""
    entries = []
    for item in revoked:
        flag = REASON_FLAGS.get(item.reason or "")
        extensions: list[x509.Extension[x509.ExtensionType]] = (
            [x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(flag))] if flag else [])
        # The constructor takes the whole list (add_revoked_certificate copies it each time);
        # the time is written in whole seconds.
        entries.append(x509.RevokedCertificateBuilder(item.serial, item.revoked_at, extensions).build())
    scope = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, only_contains_user_certs=True,
        only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
        only_contains_attribute_certs=False)
    builder = (x509.CertificateRevocationListBuilder(issuer.subject, this_update.replace(microsecond=0),
                                                     next_update.replace(microsecond=0), [], entries)
               .add_extension(_aki(issuer), critical=False)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(scope, critical=True))
    return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]
