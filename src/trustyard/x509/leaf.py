"""What a peer (end-entity) certificate must look like to authenticate a TLS server or client.

The rules refuse by default: an end-entity certificate names the usage it is for in its
EKU (no EKU, or anyExtendedKeyUsage alone, is not enough), its keyUsage fits a TLS
signature and does not sign certificates, it is not a CA, its key is not weak, and for a
server every Common Name is also a SAN (CA/B Forum BR 7.1.4.3), so that a client
honouring the CN cannot be pointed at a name the SANs do not carry.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID

from .names import common_names, sans_of


@dataclass(frozen=True)
class Problem:
    """One reason a chain is refused: the layer doctor names, a stable code, the evidence."""

    layer: str  # trust | identity | validity
    code: str
    detail: str


_WANTED = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_GOOD_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def usage_problem(cert: x509.Certificate, usage: str) -> Problem | None:
    """EKU and keyUsage for TLS ``usage`` ("server" or "client")."""
    wanted = _WANTED[usage]
    try:
        eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return Problem("trust", "wrong_usage", f"the certificate has no extendedKeyUsage; {usage}Auth is required")
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return Problem("trust", "wrong_usage", "an end-entity certificate with anyExtendedKeyUsage "
                       "(CA/B Forum BR 7.1.2.7.10): name the usages instead")
    if cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).critical:
        return Problem("trust", "wrong_usage", "extendedKeyUsage is marked critical (CA/B Forum BR 7.1.2.7.6)")
    if wanted not in eku:
        have = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku) or "none"
        return Problem("trust", "wrong_usage", f"extendedKeyUsage ({have}) does not allow {usage}Auth")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ku.key_cert_sign or ku.crl_sign:
        return Problem("trust", "wrong_usage", "keyUsage of an end-entity certificate allows signing "
                       "certificates or CRLs")
    rsa_kx = isinstance(cert.public_key(), rsa.RSAPublicKey) and ku.key_encipherment and usage == "server"
    if not ku.digital_signature and not rsa_kx:
        return Problem("trust", "wrong_usage", "keyUsage lacks digitalSignature, which TLS authentication needs")
    return None


def ca_problem(cert: x509.Certificate) -> Problem | None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    if bc.ca:
        return Problem("trust", "leaf_is_ca", "the certificate is a CA certificate (basicConstraints CA:TRUE), "
                       "not a service certificate")
    return None


def key_problem(cert: x509.Certificate) -> Problem | None:
    key = cert.public_key()
    if isinstance(key, dsa.DSAPublicKey):
        return Problem("trust", "weak_key", "DSA keys are not accepted")
    if isinstance(key, rsa.RSAPublicKey) and (key.key_size < 2048 or key.key_size % 8):
        return Problem("trust", "weak_key", f"an RSA key of {key.key_size} bits (at least 2048, a multiple of 8)")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _GOOD_CURVES:
        return Problem("trust", "weak_key", f"an EC key on {key.curve.name} (P-256, P-384 or P-521 only)")
    return None


def cn_problem(cert: x509.Certificate) -> Problem | None:
    """Every CN of a server certificate must be one of its SANs, written the same way."""
    cns = [cn for cn in common_names(cert.subject) if _host_like(cn)]
    sans = sans_of(cert)
    if not cns or not sans:
        return None  # no SANs at all: the identity check says "cn_only" when a name is expected
    texts = {n.value for n in sans if isinstance(n, x509.DNSName)}
    texts |= {str(n.value) for n in sans if isinstance(n, x509.IPAddress)}
    if not texts:
        return None
    for cn in cns:
        if cn not in texts:
            return Problem("identity", "cn_not_in_san", f"the CN {cn!r} is not written as one of the SANs "
                           f"({', '.join(sorted(texts))})")
    return None


def serial_problem(cert: x509.Certificate) -> Problem | None:
    with warnings.catch_warnings():  # cryptography warns about exactly what is checked here
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        serial = cert.serial_number
    if serial <= 0:
        return Problem("trust", "malformed_certificate", f"serial number {serial} is not positive (RFC 5280 4.1.2.2)")
    return None


def leaf_problems(cert: x509.Certificate, usage: str) -> list[Problem]:
    """Every profile rule ``cert`` breaks as a TLS ``usage`` peer, most fundamental first."""
    try:
        checks = [ca_problem(cert), usage_problem(cert, usage), key_problem(cert), serial_problem(cert)]
        if usage == "server":
            checks.append(cn_problem(cert))
    except Exception as exc:
        return [Problem("trust", "malformed_certificate", f"the certificate cannot be processed: "
                        f"{type(exc).__name__}: {exc}")]
    return [p for p in checks if p is not None]


def _host_like(text: str) -> bool:
    """A CN written as one token (a host name or address), not a label like "Orders Service"."""
    return bool(text) and not any(c.isspace() for c in text)
