"""Bootstrap tokens (``ca.tokens``) and renewal/revocation proofs (``ca.proofs``).

Both are JWTs; every refusal is ``Unauthorized`` (401). Random text only reaches the JWT
splitter, so the strategies here also sign hostile headers and claims with real keys: the
provisioner's key for tokens (as a leaked or buggy minting client would), and for proofs the
key of any certificate at all, since anyone can make a certificate and put it in ``x5c``:
the ledger lookup comes after ``proofs.verify``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.ca import proofs, tokens
from trustyard.ca.authority import Authority, duration_field
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.errors import TrustyardError, Unauthorized
from trustyard.x509.keys import KeyType, generate_private_key, jws_algorithm, signature_hash

from ..support import PASSWORD
from .strategies import b64url, budget, json_values, mutated, replaced_values

KEY = generate_private_key(KeyType.EC_P256)
OTHER_KEY = generate_private_key(KeyType.ED25519)
NOW = datetime.now(UTC)
T = int(NOW.timestamp())


def _cert(key: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "anyone")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .sign(key, signature_hash(key)))


CERT = _cert(KEY)
CERT_DER = CERT.public_bytes(Encoding.DER)
X5C = base64.b64encode(CERT_DER).decode()

_times = st.one_of(st.integers(T - 10**6, T + 10**6), st.sampled_from([T, T + 60, T - 60, T + 10**12, -1, 0]),
                   st.integers(T - 100, T + 100).map(str), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([True, None, [T], {"t": T}, "now", ""]))
_claim_values = json_values | _times


def _token_claims() -> dict[str, Any]:
    return {"iss": "default", "aud": tokens.AUDIENCE, "sub": "a.internal", "sans": ["a.internal"],
            "iat": T, "nbf": T, "exp": T + 300, "jti": "j1"}


def _proof_claims() -> dict[str, Any]:
    return {"aud": proofs.RENEW, "iat": T, "exp": T + 60, "jti": "j2", "csr_sha256": "00"}


def _sign(claims: dict[str, Any], key: Any, headers: dict[str, Any]) -> str:
    # json.dumps as PyJWT would, but allowing NaN and Infinity, which Python's JSON reader accepts
    header = {"alg": jws_algorithm(key), "typ": "JWT", **headers}
    signing_input = f"{b64url(json.dumps(header))}.{b64url(json.dumps(claims))}"
    raw = jwt.get_algorithm_by_name(jws_algorithm(key)).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(raw)}"


def _only_401(call: Any) -> Any:
    try:
        return call()
    except Unauthorized as exc:
        assert exc.status == 401 and exc.detail
        return None


@st.composite
def text_tokens(draw: st.DrawFn) -> str:
    """Unsigned garbage in JWT shape, and real tokens with bytes flipped."""
    real = _sign(_token_claims(), KEY, {"kid": "default"})
    return draw(st.one_of(
        st.text(max_size=300),
        st.builds(lambda h, p, s: f"{b64url(json.dumps(h))}.{b64url(json.dumps(p))}.{s}", json_values, json_values,
                  st.text("abcXYZ-_0189", max_size=90)),
        mutated(real.encode()).map(lambda b: b.decode("latin-1")),
    ))


@budget(150)
@given(text_tokens())
def test_token_and_proof_text_only_raise_401(token: str) -> None:
    _only_401(lambda: tokens.verify(token, {"default": KEY.public_key()}))
    _only_401(lambda: proofs.verify(token, proofs.RENEW))


@budget(150)
@given(replaced_values(_token_claims(), _claim_values),
       replaced_values({"kid": "default"}, json_values | st.sampled_from(["default", "other", ""])))
@example({**_token_claims(), "exp": str(T + 300), "iat": str(T)}, {"kid": "default"})
@example({**_token_claims(), "sub": 5, "sans": None}, {"kid": "default"})
@example({**_token_claims(), "ttl": ["24h"]}, {"kid": "default"})
def test_signed_tokens_with_hostile_claims_verify_or_raise_401(claims: dict[str, Any], headers: dict[str, Any]) -> None:
    token = _sign(claims, KEY, headers)
    result = _only_401(lambda: tokens.verify(token, {"default": KEY.public_key()}))
    if result is not None:
        assert isinstance(result, tokens.TokenClaims)
        assert all(isinstance(s, str) for s in result.sans) and isinstance(result.subject, str)
        assert result.cert_ttl is None or isinstance(result.cert_ttl, str)


@budget(150)
@given(replaced_values(_proof_claims(), _claim_values),
       st.one_of(st.just([X5C]), st.lists(st.text(max_size=40), max_size=3), json_values,
                 mutated(CERT_DER).map(lambda d: [base64.b64encode(d).decode()])),
       st.sampled_from([KEY, OTHER_KEY]))
@example({**_proof_claims(), "exp": str(T + 60), "iat": str(T)}, [X5C], KEY)
@example({**_proof_claims(), "exp": T + 60.5, "iat": T}, [X5C], KEY)
@example({**_proof_claims(), "jti": {"a": 1}}, [X5C], KEY)
def test_signed_proofs_with_hostile_claims_verify_or_raise_401(claims: dict[str, Any], x5c: Any, key: Any) -> None:
    """Any certificate's key signs a proof: it must come out as a Proof or a 401, never a TypeError."""
    token = _sign(claims, key, {"x5c": x5c})
    result = _only_401(lambda: proofs.verify(token, proofs.RENEW))
    if result is not None:
        assert isinstance(result, proofs.Proof) and isinstance(result.jti, str)
        assert result.expires_at - datetime.now(UTC) <= proofs.MAX_PROOF_LIFETIME + timedelta(minutes=1)


# -- minting: `trustyard token NAME --san ... --ttl ... --cert-ttl ...` -------------------------

@pytest.fixture(scope="module")
def minting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authority]:
    home = tmp_path_factory.mktemp("fuzz-mint") / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "10.0.0.0/8", "spiffe://prod.internal/*")))
    authority = load_authority(home, PASSWORD, minting=True)
    yield authority
    authority.store.close()


_names = st.one_of(st.text(max_size=30), st.sampled_from(["a.internal", "*.internal", "10.0.0.1", "::1", "a..internal",
                                                          "spiffe://prod.internal/x", "example.com", "", " "]))


@budget(100)
@given(_names, st.lists(_names, max_size=3))
def test_minting_a_token_for_any_names_is_a_token_or_a_4xx(minting: Authority, subject: str, sans: list[str]) -> None:
    try:
        token = minting.mint_token("default", subject, sans)
    except TrustyardError as exc:
        assert 400 <= exc.status < 500, exc
        return
    assert tokens.verify(token, {"default": minting.provisioners["default"].public_key}).jti  # type: ignore[dict-item]


@budget(60)
@given(st.sampled_from(["5m", "1h", "0s", "-5m", "1e9h", "x", "25h"]), st.sampled_from([None, "1h", "30d", "-5m", "x"]))
@example("9999999999999d", None)
@example("5m", "9999999999999d")
def test_minting_with_hostile_durations_is_a_4xx(minting: Authority, ttl: str, cert_ttl: str | None) -> None:
    """Any token or certificate lifetime text at minting mints a token or raises a 4xx error, nothing else."""
    try:
        minting.mint_token("default", "a.internal", [], ttl=duration_field("ttl", ttl),
                           cert_ttl=duration_field("cert_ttl", cert_ttl) if cert_ttl else None)
    except TrustyardError as exc:
        assert 400 <= exc.status < 500, exc
