"""JWS and JWK as ACME clients send them (``acme.jws``).

Every malformed input is an ``AcmeError`` with a 4xx status: ``parse_jwk`` over JWK objects
with members replaced or mutated, ``parse_jws`` over real flattened JWS bodies with bytes
flipped and members replaced, ``verify_signature`` over well-formed JWS whose signature or
key is wrong, and ``verify_eab`` over hostile external account bindings.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.acme.jws import Jwk, jwk_of, parse_jwk, parse_jws, verify_eab, verify_signature
from trustyard.acme.problems import AcmeError

from ..acme.client import AccountKey
from .strategies import b64url, budget, json_values, mutated, replaced_values

ACCOUNTS = [AccountKey("ES256"), AccountKey("ES384"), AccountKey("RS256"), AccountKey("EdDSA"),
            AccountKey("ES256", ec.generate_private_key(ec.SECP521R1()))]
JWKS = [a.jwk for a in ACCOUNTS]
URL = "https://ca.internal/acme/acme/new-account"
EAB_KEY = b64url(b"k" * 32)


def _designed(call: Any) -> Any:
    try:
        return call()
    except AcmeError as exc:
        assert 400 <= exc.status < 500, (exc.kind, exc.detail)
        assert exc.detail
        return None


def _b64_variants(raw: bytes) -> st.SearchStrategy[Any]:
    return st.one_of(mutated(raw).map(b64url), st.just(b64url(raw) + "="), st.just(b64url(raw) + "!"),
                     st.just(b64url(raw)[:-1]), st.just(b64url(raw).replace("-", "+")), json_values)


@st.composite
def jwk_objects(draw: st.DrawFn) -> Any:
    jwk = dict(draw(st.sampled_from(JWKS)))
    if draw(st.booleans()):
        member = draw(st.sampled_from(sorted(jwk)))
        if member in ("x", "y", "n", "e"):
            from trustyard.acme.jws import b64d

            jwk[member] = draw(_b64_variants(b64d(jwk[member], member)))
        else:
            jwk[member] = draw(json_values | st.sampled_from(["EC", "RSA", "OKP", "P-256", "P-384", "Ed25519",
                                                               "Ed448", "X25519", "oct"]))
        return jwk
    return draw(st.one_of(replaced_values(jwk), json_values))


@budget(200)
@given(jwk_objects())
@example({"kty": "RSA", "n": b64url(b"\xff" * 256), "e": b64url(b"\x01\x00\x01")})
@example({"kty": "RSA", "n": b64url(b"\xff" * 256), "e": b64url(b"\xff" * 9)})
@example({"kty": "EC", "crv": "P-256", "x": b64url(b"\x00" * 32), "y": b64url(b"\x00" * 32)})
@example({"kty": "OKP", "crv": "Ed25519", "x": b64url(b"\xff" * 32)})
def test_parse_jwk_returns_a_key_or_raises_acme_error(value: Any) -> None:
    jwk = _designed(lambda: parse_jwk(value))
    if jwk is not None:
        assert isinstance(jwk, Jwk)
        assert parse_jwk(dict(jwk.members)).thumbprint == jwk.thumbprint  # canonical form reads back


def _valid_body(account: AccountKey, payload: Any = None) -> dict[str, str]:
    return account.jws({"alg": account.alg, "nonce": "n", "url": URL, "jwk": account.jwk}, payload or {"a": 1})


BODIES = [json.dumps(_valid_body(a)).encode() for a in ACCOUNTS]


@st.composite
def jws_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.sampled_from(BODIES).flatmap(mutated))
    body = json.loads(draw(st.sampled_from(BODIES)))
    if choice == 1:
        return json.dumps(draw(replaced_values(body))).encode()
    if choice == 2:  # a protected header with hostile members, still well-encoded
        header = draw(replaced_values({"alg": "ES256", "nonce": "n", "url": URL, "jwk": JWKS[0]},
                                      json_values | st.sampled_from(["none", "HS256", "ES256", "RS256", "EdDSA"])))
        body["protected"] = b64url(json.dumps(header))
        return json.dumps(body).encode()
    for member in ("protected", "payload", "signature"):
        if draw(st.booleans()):
            body[member] = draw(st.one_of(st.text(max_size=30), st.binary(max_size=30).map(b64url),
                                          st.just(b64url(b"[1,2]")), st.just(b64url(b'{"b64": false, "alg": "ES256"}')),
                                          st.just(b64url(b'{"crit": ["b64"], "alg": "ES256"}'))))
    return json.dumps(body).encode()


@budget(250)
@given(jws_bodies(), st.sampled_from(range(len(ACCOUNTS))))
@example(b'{"protected": "e30", "payload": "", "signature": ""}', 0)
@example(b"[" * 100_000, 0)
def test_parse_and_verify_jws_only_raise_acme_error(body: bytes, index: int) -> None:
    jws = _designed(lambda: parse_jws(body))
    if jws is None:
        return
    _designed(jws.payload_json)
    jwk = parse_jwk(ACCOUNTS[index].jwk)
    _designed(lambda: verify_signature(jws, jwk))
    if isinstance(jws.header.get("jwk"), dict):
        header_jwk = _designed(lambda: parse_jwk(jws.header["jwk"]))
        if header_jwk is not None:
            _designed(lambda: verify_signature(jws, header_jwk))


@budget(200)
@given(st.binary(max_size=600), st.sampled_from(ACCOUNTS))
def test_signature_of_any_length_is_refused_with_acme_error(signature: bytes, account: AccountKey) -> None:
    body = _valid_body(account)
    body["signature"] = b64url(signature)
    jws = parse_jws(json.dumps(body).encode())
    for other in ACCOUNTS:  # the right key, and keys of every other type and curve
        _designed(lambda other=other: verify_signature(jws, jwk_of(other.key.public_key())))


def _eab(account: AccountKey, header: dict[str, Any], payload: Any, key: bytes = b"k" * 32) -> dict[str, str]:
    import hashlib
    import hmac

    protected, body = b64url(json.dumps(header)), b64url(json.dumps(payload))
    signature = hmac.new(key, f"{protected}.{body}".encode(), hashlib.sha256).digest()
    return {"protected": protected, "payload": body, "signature": b64url(signature)}


@budget(100)
@given(st.one_of(
    replaced_values({"alg": "HS256", "kid": "kid-1", "url": URL}, json_values | st.sampled_from(["HS256", "kid-1", URL])),
    st.just({"alg": "HS256", "kid": "kid-1", "url": URL})),
    st.one_of(st.just(None), json_values, jwk_objects()), json_values)
def test_external_account_binding_only_raises_acme_error(header: dict[str, Any], payload: Any, binding: Any) -> None:
    account = ACCOUNTS[0]
    signed = _eab(account, header, account.jwk if payload is None else payload)
    keys = {"kid-1": EAB_KEY}
    for candidate in (signed, binding):
        kid = _designed(lambda candidate=candidate: verify_eab(candidate, parse_jwk(account.jwk), URL, keys))
        assert kid in (None, "kid-1")


def test_a_well_formed_eab_is_accepted() -> None:
    """The anchor of the property above: the binding it mutates is a good one."""
    account = ACCOUNTS[0]
    binding = _eab(account, {"alg": "HS256", "kid": "kid-1", "url": URL}, account.jwk)
    assert verify_eab(binding, parse_jwk(account.jwk), URL, {"kid-1": EAB_KEY}) == "kid-1"
