"""Revocation of a path's certificates by the CRLs a caller holds (no fetching: pure).

A CRL counts for a certificate when its issuer name is the certificate's issuer and the
issuing CA's key verified its signature. Such a CRL must be usable: its issuer may sign
CRLs (keyUsage cRLSign, when keyUsage is present) and it carries a non-critical CRL number
(RFC 5280 5.2.3). A certificate without such a CRL is not judged here: trustyard's leaves
are short-lived and revocation is passive.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from cryptography import x509

from .chain import label
from .leaf import Problem

# RFC 5280 CRLReason names, as the API, the CLI and the ledger spell them.
REVOCATION_REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
                      "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise")


def revocation_problem(path: Sequence[x509.Certificate],
                       crls: Sequence[x509.CertificateRevocationList]) -> Problem | None:
    for child, parent in itertools.pairwise(path):
        for crl in crls:
            if crl.issuer != parent.subject or not _signed_by(crl, parent):
                continue
            problem = _unusable(crl, parent)
            if problem:
                return problem
            if crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
                return Problem("trust", "revoked", f"{label(child)} (serial {child.serial_number:x}) is revoked "
                               f"by the CRL of {label(parent)}")
    return None


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except Exception:
        return False


def _unusable(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> Problem | None:
    who = label(issuer)
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.crl_sign:
        return Problem("trust", "invalid_crl", f"{who} signed a CRL but its keyUsage lacks cRLSign")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    except x509.ExtensionNotFound:
        return Problem("trust", "invalid_crl", f"the CRL of {who} has no CRL number (RFC 5280 5.2.3)")
    if number.critical:
        return Problem("trust", "invalid_crl", f"the CRL of {who} marks its CRL number critical (RFC 5280 5.2.3)")
    return None
