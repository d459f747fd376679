"""One-time bootstrap tokens: a JWT signed by a provisioner key, bound to names.

Claims: ``iss`` (provisioner), ``aud`` = ``trustyard:sign``, ``sub`` (the NAME), ``sans``,
``iat``/``nbf``/``exp``, a random ``jti`` that the store redeems once, and optionally
``ttl`` (the certificate lifetime asked for at mint time).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from ..errors import Code, Unauthorized
from ..units import format_duration
from ..x509.keys import PrivateKey, PublicKey, jws_algorithm

AUDIENCE = "trustyard:sign"
MAX_TOKEN_LIFETIME = timedelta(hours=24)
LEEWAY = timedelta(seconds=30)
MAX_TOKEN_BYTES = 8 * 1024


@dataclass(frozen=True)
class TokenClaims:
    provisioner: str
    subject: str
    sans: tuple[str, ...]
    jti: str
    expires_at: datetime
    cert_ttl: str | None


def mint(key: PrivateKey, provisioner: str, subject: str, sans: list[str], ttl: timedelta,
         cert_ttl: timedelta | None = None, now: datetime | None = None) -> tuple[str, TokenClaims]:
    if ttl <= timedelta(0) or ttl > MAX_TOKEN_LIFETIME:
        raise ValueError(f"a token may live at most {format_duration(MAX_TOKEN_LIFETIME)}, not {format_duration(ttl)}")
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": provisioner, "aud": AUDIENCE, "sub": subject, "sans": list(sans),
        "iat": int(now.timestamp()), "nbf": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(24),
    }
    if cert_ttl is not None:
        claims["ttl"] = format_duration(cert_ttl)  # text in the token, read back by ``parse_duration``
    token = jwt.encode(claims, key, algorithm=jws_algorithm(key), headers={"kid": provisioner})
    return token, _claims(claims)


def verify(token: str, keys: Mapping[str, PublicKey], now: datetime | None = None) -> TokenClaims:
    """Check signature, audience and time; the caller redeems ``jti`` atomically with issuance."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("missing or oversized bootstrap token", code=Code.BAD_TOKEN)
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized(f"the token names an unknown provisioner {kid!r}", code=Code.BAD_TOKEN)
        claims = jwt.decode(
            token, key, algorithms=[jws_algorithm(key)], audience=AUDIENCE, issuer=kid,
            leeway=LEEWAY, options={"require": ["exp", "iat", "nbf", "jti", "sub", "iss", "aud"]},
        )
    except Unauthorized:
        raise
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the bootstrap token has expired: mint a new one", code=Code.TOKEN_EXPIRED) from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the bootstrap token is not valid yet (check the clocks)", code=Code.BAD_TOKEN) from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the bootstrap token's signature does not verify (forged or from another CA)",
                           code=Code.BAD_TOKEN) from None
    except Exception as exc:  # PyJWT and the JSON layer raise many types on garbage
        raise Unauthorized(f"malformed bootstrap token: {type(exc).__name__}", code=Code.BAD_TOKEN) from None
    if not all(_numeric_date(claims[c]) for c in ("exp", "iat", "nbf")):
        # PyJWT reads "123" as a date too; the lifetime arithmetic below needs numbers
        raise Unauthorized("the bootstrap token's exp, iat and nbf must be numbers", code=Code.BAD_TOKEN)
    if claims["exp"] - claims["iat"] > MAX_TOKEN_LIFETIME.total_seconds():
        raise Unauthorized("the bootstrap token lives longer than 24h: refused", code=Code.BAD_TOKEN)
    sans = claims.get("sans", [])
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans) or not isinstance(claims["sub"], str):
        raise Unauthorized("the bootstrap token's names are malformed", code=Code.BAD_TOKEN)
    return _claims(claims)


def _numeric_date(value: Any) -> bool:
    """RFC 7519 NumericDate: a JSON number (not a string, not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _claims(claims: Mapping[str, Any]) -> TokenClaims:
    ttl = claims.get("ttl")
    return TokenClaims(
        provisioner=str(claims["iss"]), subject=str(claims["sub"]),
        sans=tuple(claims.get("sans") or [claims["sub"]]), jti=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        cert_ttl=ttl if isinstance(ttl, str) else None,
    )
