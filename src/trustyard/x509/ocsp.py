"""OCSP (RFC 6960) as pure functions: the delegated responder's certificate, the CertID hashes
of an issuer, a request's question, and signed or unsuccessful responses. No I/O, no cache:
``ca/ocsp.py`` decides what to answer and when to sign.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import PrivateKey, PublicKey, signature_hash
from .profiles import _aki, new_serial

# The ledger's reason names (x509/revocation.py REVOCATION_REASONS) as CRLReason values.
REASON_FLAGS = {
    "unspecified": x509.ReasonFlags.unspecified, "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise, "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded, "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold, "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}

# CertID hash algorithms a request may use (RFC 6960 4.1.1; SHA-1 is what most clients send).
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

IssuerKey = tuple[str, bytes, bytes]
"""(hash algorithm name, issuerNameHash, issuerKeyHash): how a request names its issuer."""


@dataclass(frozen=True)
class Question:
    """What one OCSP request asks: the certificate's issuer (as hashes) and serial number."""

    issuer: IssuerKey
    serial: int
    nonce: bytes | None


def _subject_public_key(key: PublicKey) -> bytes:
    """The subjectPublicKey BIT STRING's content, which issuerKeyHash hashes (RFC 6960 4.1.1)."""
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    raise ValueError(f"no OCSP key hash for a {type(key).__name__}")


def issuer_keys(issuer: x509.Certificate) -> list[IssuerKey]:
    """Every way a request may name ``issuer``: one CertID issuer per hash algorithm."""
    name = issuer.subject.public_bytes()
    key = _subject_public_key(issuer.public_key())  # type: ignore[arg-type]
    return [(alg, hashlib.new(alg, name).digest(), hashlib.new(alg, key).digest()) for alg in CERT_ID_HASHES]


def parse_request(der: bytes) -> Question:
    """The question of a DER OCSPRequest; ValueError when it is not one request for one
    certificate (cryptography refuses several), or names an unknown hash algorithm."""
    request = ocsp.load_der_ocsp_request(der)
    try:
        alg = request.hash_algorithm.name
    except UnsupportedAlgorithm:
        raise ValueError("the CertID's hash algorithm is not supported") from None
    if alg not in CERT_ID_HASHES:
        raise ValueError(f"the CertID's hash algorithm {alg} is not supported")
    try:
        nonce: bytes | None = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        nonce = None
    return Question((alg, request.issuer_name_hash, request.issuer_key_hash), request.serial_number, nonce)


def responder_builder(public_key: PublicKey, issuer: x509.Certificate, not_before: datetime,
                      lifetime: timedelta) -> x509.CertificateBuilder:
    """A delegated OCSP responder's certificate (RFC 6960 4.2.2.2): issued by the CA whose
    certificates it answers for, id-kp-OCSPSigning, and id-pkix-ocsp-nocheck (its own status is
    not asked for: it is short-lived instead)."""
    cn = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = issuer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    base = cn[0].value if cn else "trustyard"
    name = f"{base.decode() if isinstance(base, bytes) else base} OCSP Responder"
    attrs = [*(org[:1]), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(min(not_before + lifetime, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def signed_response(question: Question, status: str, this_update: datetime, next_update: datetime,
                    responder: x509.Certificate, key: PrivateKey, revoked_at: datetime | None = None,
                    reason: str | None = None) -> bytes:
    """A successful response for ``question``: ``status`` good, revoked (with time and reason) or
    unknown, signed by the delegated responder, which it carries. No nonce: the response is made
    to be served again (RFC 5019 2.2.1)."""
    alg, name_hash, key_hash = question.issuer
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    revoked = status == "revoked"
    flag = REASON_FLAGS.get(reason or "", x509.ReasonFlags.unspecified) if revoked else None
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=question.serial,
        algorithm=CERT_ID_HASHES[alg](), cert_status=cert_status, this_update=this_update, next_update=next_update,
        revocation_time=revoked_at if revoked else None,
        # RFC 5280: the reason code is omitted rather than "unspecified".
        revocation_reason=flag if flag is not None and flag != x509.ReasonFlags.unspecified else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, responder).certificates([responder])
    return builder.sign(key, signature_hash(key)).public_bytes(Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error response (malformedRequest, internalError, tryLater, unauthorized)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


MALFORMED = unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
TRY_LATER = unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
