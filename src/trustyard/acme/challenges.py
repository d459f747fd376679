"""What each challenge type expects (RFC 8555 section 8, RFC 8737, RFC 8738)."""

from __future__ import annotations

import hashlib

from .jws import b64e

HTTP_01, DNS_01, TLS_ALPN_01 = "http-01", "dns-01", "tls-alpn-01"
ACME_TLS_ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"


def challenge_types(identifier_type: str, wildcard: bool) -> tuple[str, ...]:
    """Which challenges prove control of an identifier: a wildcard only by DNS, an IP never by DNS."""
    if identifier_type == "ip":
        return (HTTP_01, TLS_ALPN_01)
    if wildcard:
        return (DNS_01,)
    return (HTTP_01, DNS_01, TLS_ALPN_01)


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_txt(key_auth: str) -> str:
    return b64e(hashlib.sha256(key_auth.encode()).digest())


def tls_alpn01_extension_value(key_auth: str) -> bytes:
    """The DER of the acmeIdentifier extension's value: an OCTET STRING of SHA-256(key authorization)."""
    return b"\x04\x20" + hashlib.sha256(key_auth.encode()).digest()
