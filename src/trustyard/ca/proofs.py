"""Proof of possession of a certificate's key, for renewal and revocation.

The holder signs a short-lived JWT with the certificate's private key and carries the
certificate in the ``x5c`` header (RFC 7515). Claims: ``aud`` (``trustyard:renew`` or
``trustyard:revoke`` or ``trustyard:checkin``), ``iat``/``exp`` (at most 5 minutes apart, 2 for a
check-in), ``jti`` (single use) and what the proof is about: ``csr_sha256`` for a renewal,
``serial`` for a revocation, ``report`` for a check-in (``ca.fleet``). The audience keeps each
proof to its purpose: a renewal proof is no check-in, and a check-in proof renews nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import Code, Unauthorized
from ..x509.keys import PrivateKey, describe_key, jws_algorithm, key_type_of

RENEW = "trustyard:renew"
REVOKE = "trustyard:revoke"
CHECKIN = "trustyard:checkin"
MAX_PROOF_LIFETIME = timedelta(minutes=5)
MAX_PROOF_BYTES = 16 * 1024


@dataclass(frozen=True)
class Proof:
    certificate: x509.Certificate
    claims: dict[str, Any]
    jti: str
    expires_at: datetime


def csr_digest(csr_der: bytes) -> str:
    return hashlib.sha256(csr_der).hexdigest()


def make(key: PrivateKey, chain: list[x509.Certificate], audience: str, lifetime: timedelta = timedelta(minutes=2),
         **claims: Any) -> str:
    now = datetime.now(UTC)
    body = {"aud": audience, "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp()),
            "jti": secrets.token_urlsafe(24), **claims}
    x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]
    return jwt.encode(body, key, algorithm=jws_algorithm(key), headers={"x5c": x5c})


def certificate_of(token: str) -> x509.Certificate:
    """The certificate the proof claims to be signed for (``x5c[0]``), parsed, nothing verified.

    Look it up in the ledger with this, before ``verify`` spends a signature check on it:
    a proof for a certificate the CA never issued then costs the CA no public-key operation.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_PROOF_BYTES:
        raise Unauthorized("missing or oversized proof", code=Code.BAD_PROOF)
    try:
        header = _unverified_header(token)
        x5c = header.get("x5c")
        if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
            raise Unauthorized("the proof carries no certificate (x5c header)", code=Code.BAD_PROOF)
        return x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except Unauthorized:
        raise
    except Exception as exc:
        raise Unauthorized(f"malformed proof: {type(exc).__name__}", code=Code.BAD_PROOF) from None


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read as PyJWT reads it (base64url, no junk, a JSON object), at C speed:
    PyJWT checks the segment character by character in Python, and ``verify`` parses the token
    once more anyway. The header of a check-in proof carries the certificate (about 1 kB); the
    check-in path spent a fifth of its CPU on this check, done twice."""
    head, dot, _rest = token.partition(".")
    if not dot or not _SEGMENT.fullmatch(head) or len(head) % 4 == 1:
        raise ValueError("not a compact JWS")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def verify(token: str, audience: str, certificate: x509.Certificate | None = None) -> Proof:
    """Verify the signature with the key of ``certificate``: the one ``certificate_of`` read from
    ``x5c`` and the caller found in its ledger (``Authority`` compares it byte for byte).
    Without it, the ``x5c`` certificate is read here, unchecked. A key of a type trustyard does
    not issue (RSA-8192, P-521, DSA) is refused before any signature is checked.
    """
    cert = certificate if certificate is not None else certificate_of(token)
    try:
        key = cert.public_key()
        if key_type_of(key) is None:  # type: ignore[arg-type]
            raise Unauthorized(f"the proof's certificate has a {describe_key(key)} key, which this CA never "
                               "issues for", code=Code.BAD_PROOF)
        claims = jwt.decode(token, key, algorithms=[jws_algorithm(key)], audience=audience,  # type: ignore[arg-type]
                            options={"require": ["exp", "iat", "jti", "aud"]}, leeway=timedelta(seconds=30))
    except Unauthorized:
        raise
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the proof has expired", code=Code.BAD_PROOF) from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the proof is not signed by the certificate's key", code=Code.BAD_PROOF) from None
    except Exception as exc:
        raise Unauthorized(f"malformed proof: {type(exc).__name__}", code=Code.BAD_PROOF) from None
    if not all(isinstance(claims[c], (int, float)) and not isinstance(claims[c], bool) for c in ("exp", "iat")):
        # PyJWT reads "123" as a date too; the lifetime arithmetic below needs numbers
        raise Unauthorized("the proof's exp and iat must be numbers", code=Code.BAD_PROOF)
    if claims["exp"] - claims["iat"] > MAX_PROOF_LIFETIME.total_seconds():
        raise Unauthorized("the proof lives longer than 5 minutes: refused", code=Code.BAD_PROOF)
    return Proof(certificate=cert, claims=claims, jti=str(claims["jti"]),
                 expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC))
