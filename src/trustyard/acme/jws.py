"""Flattened JWS (RFC 7515) as ACME uses it (RFC 8555 section 6.2), verified with pyca/cryptography.

Only what ACME needs: the flattened JSON serialization, protected headers only, the
algorithms ES256/ES384/ES512, RS256 and EdDSA (Ed25519) for account keys and HS256/384/512
for External Account Binding. Every malformed input becomes an ``AcmeError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .problems import AcmeCode, AcmeError

JwsKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "EdDSA")
EAB_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}
_EC_ALG = {"ES256": ("P-256", hashes.SHA256), "ES384": ("P-384", hashes.SHA384), "ES512": ("P-521", hashes.SHA512)}
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192


def b64d(text: Any, what: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2)."""
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise AcmeError(AcmeCode.MALFORMED, f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AcmeError(AcmeCode.MALFORMED, f"{what} is not unpadded base64url") from None


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise AcmeError(AcmeCode.MALFORMED, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise AcmeError(AcmeCode.MALFORMED, f"{what} must be a JSON object")
    return value


# -- JWK ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Jwk:
    """A public account key: the cryptography key, its canonical JWK members and RFC 7638 thumbprint."""

    key: JwsKey
    members: dict[str, str]

    @property
    def thumbprint(self) -> str:
        canonical = json.dumps(self.members, sort_keys=True, separators=(",", ":")).encode()
        return b64e(hashlib.sha256(canonical).digest())

    def to_json(self) -> str:
        return json.dumps(self.members, sort_keys=True, separators=(",", ":"))


def parse_jwk(value: Any) -> Jwk:
    if not isinstance(value, dict):
        raise AcmeError(AcmeCode.MALFORMED, "jwk must be a JSON object")
    if "d" in value or "p" in value or "k" in value:
        raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, "jwk must be a public key (it has private or symmetric members)")
    kty = value.get("kty")
    try:
        if kty == "EC":
            crv = value.get("crv")
            if crv not in _CURVES:
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, f"unsupported EC curve {str(crv)[:20]!r} (P-256, P-384, P-521)")
            curve, size = _CURVES[crv]
            x, y = b64d(value.get("x"), "jwk.x"), b64d(value.get("y"), "jwk.y")
            if len(x) != size or len(y) != size:
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, f"jwk coordinates must be {size} bytes for {crv}")
            key: JwsKey = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                        curve()).public_key()
            return Jwk(key, {"kty": "EC", "crv": crv, "x": b64e(x), "y": b64e(y)})
        if kty == "RSA":
            n_raw, e_raw = b64d(value.get("n"), "jwk.n"), b64d(value.get("e"), "jwk.e")
            n, e = int.from_bytes(n_raw, "big"), int.from_bytes(e_raw, "big")
            if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
            if e < 3 or e % 2 == 0 or e.bit_length() > 64:
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, "RSA public exponent is not acceptable")
            key = rsa.RSAPublicNumbers(e, n).public_key()
            return Jwk(key, {"kty": "RSA", "n": b64e(_unsigned(n)), "e": b64e(_unsigned(e))})
        if kty == "OKP":
            if value.get("crv") != "Ed25519":
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, "unsupported OKP curve (Ed25519 only)")
            x = b64d(value.get("x"), "jwk.x")
            if len(x) != 32:
                raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, "Ed25519 keys are 32 bytes")
            key = ed25519.Ed25519PublicKey.from_public_bytes(x)
            return Jwk(key, {"kty": "OKP", "crv": "Ed25519", "x": b64e(x)})
    except AcmeError:
        raise
    except Exception:  # cryptography rejects points off the curve etc. with several types
        raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, "the jwk is not a valid public key") from None
    raise AcmeError(AcmeCode.BAD_PUBLIC_KEY, f"unsupported key type {str(kty)[:20]!r} (EC, RSA, OKP)")


def jwk_of(key: JwsKey) -> Jwk:
    """The JWK of a cryptography public key (for a certificate's key in revokeCert)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        numbers = key.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name, key.curve.name)
        return Jwk(key, {"kty": "EC", "crv": crv, "x": b64e(numbers.x.to_bytes(size, "big")),
                         "y": b64e(numbers.y.to_bytes(size, "big"))})
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return Jwk(key, {"kty": "RSA", "n": b64e(_unsigned(rsa_numbers.n)), "e": b64e(_unsigned(rsa_numbers.e))})
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Jwk(key, {"kty": "OKP", "crv": "Ed25519", "x": b64e(key.public_bytes(Encoding.Raw, PublicFormat.Raw))})


def _unsigned(n: int) -> bytes:
    return n.to_bytes(max((n.bit_length() + 7) // 8, 1), "big")


# -- JWS ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Jws:
    protected_b64: str
    payload_b64: str
    signature: bytes
    header: dict[str, Any]
    payload: bytes

    @property
    def alg(self) -> str:
        return self.header["alg"]

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected_b64}.{self.payload_b64}".encode()

    def payload_json(self) -> dict[str, Any]:
        return _json_object(self.payload, "the JWS payload")


def parse_jws(body: bytes | Mapping[str, Any], algorithms: tuple[str, ...] = ALGORITHMS) -> Jws:
    """Flattened JSON serialization with protected headers only; checks ``alg`` against ``algorithms``."""
    doc = _json_object(body, "the request body") if isinstance(body, bytes) else dict(body)
    if set(doc) != {"protected", "payload", "signature"}:
        extra = sorted(set(doc) - {"protected", "payload", "signature"})
        raise AcmeError(AcmeCode.MALFORMED, "a JWS must be flattened JSON with exactly protected, payload and signature"
                        + (f" (unexpected: {', '.join(extra)[:100]})" if extra else ""))
    protected_b64, payload_b64 = doc["protected"], doc["payload"]
    header = _json_object(b64d(protected_b64, "protected"), "the protected header")
    payload = b64d(payload_b64, "payload")
    signature = b64d(doc["signature"], "signature")
    if "crit" in header or header.get("b64") is False:
        raise AcmeError(AcmeCode.MALFORMED, "the crit and b64 header parameters are not supported")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise AcmeError(AcmeCode.BAD_SIGNATURE_ALGORITHM, f"alg {str(alg)[:20]!r} is not accepted",
                        algorithms=list(algorithms))
    return Jws(protected_b64, payload_b64, signature, header, payload)


def verify_signature(jws: Jws, jwk: Jwk) -> None:
    alg, key, sig, data = jws.alg, jwk.key, jws.signature, jws.signing_input
    try:
        if alg in _EC_ALG:
            crv, hash_cls = _EC_ALG[alg]
            if not isinstance(key, ec.EllipticCurvePublicKey) or jwk.members.get("crv") != crv:
                raise AcmeError(AcmeCode.BAD_SIGNATURE_ALGORITHM, f"{alg} needs an EC {crv} key",
                                algorithms=list(ALGORITHMS))
            size = _CURVES[crv][1]
            if len(sig) != 2 * size:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            key.verify(der, data, ec.ECDSA(hash_cls()))
        elif alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise AcmeError(AcmeCode.BAD_SIGNATURE_ALGORITHM, "RS256 needs an RSA key", algorithms=list(ALGORITHMS))
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise AcmeError(AcmeCode.BAD_SIGNATURE_ALGORITHM, "EdDSA needs an Ed25519 key", algorithms=list(ALGORITHMS))
            key.verify(sig, data)
        else:  # parse_jws lets no other alg through
            raise AcmeError(AcmeCode.BAD_SIGNATURE_ALGORITHM, f"alg {alg!r} is not accepted", algorithms=list(ALGORITHMS))
    except InvalidSignature:
        raise AcmeError(AcmeCode.MALFORMED, "JWS signature verification failed") from None


def signature_verifies(jws: Jws, jwk: Jwk) -> bool:
    """``verify_signature`` as a yes/no, for a key that may be stale (the caller then looks again)."""
    try:
        verify_signature(jws, jwk)
    except AcmeError:
        return False
    return True


def verify_eab(binding: Any, account_jwk: Jwk, url: str, keys: Mapping[str, str]) -> str:
    """Check an externalAccountBinding (RFC 8555 section 7.3.4); returns its key id."""
    if not isinstance(binding, dict):
        raise AcmeError(AcmeCode.MALFORMED, "externalAccountBinding must be a JWS object")
    jws = parse_jws(binding, tuple(EAB_ALGORITHMS))
    kid = jws.header.get("kid")
    if "nonce" in jws.header or "jwk" in jws.header:
        raise AcmeError(AcmeCode.MALFORMED, "the externalAccountBinding JWS must not carry nonce or jwk")
    if jws.header.get("url") != url:
        raise AcmeError(AcmeCode.MALFORMED, "the externalAccountBinding url must be the newAccount URL")
    if not isinstance(kid, str) or kid not in keys:
        raise AcmeError(AcmeCode.UNAUTHORIZED, "unknown external account key id")
    try:
        secret = b64d(keys[kid], "EAB key")
    except AcmeError:
        raise AcmeError(AcmeCode.SERVER_INTERNAL, "the configured EAB key is not base64url") from None
    expected = hmac.new(secret, jws.signing_input, EAB_ALGORITHMS[jws.alg]).digest()
    if not hmac.compare_digest(expected, jws.signature):
        raise AcmeError(AcmeCode.UNAUTHORIZED, "the externalAccountBinding signature does not verify")
    if parse_jwk(jws.payload_json()).thumbprint != account_jwk.thumbprint:
        raise AcmeError(AcmeCode.UNAUTHORIZED, "the externalAccountBinding binds another key")
    return kid
