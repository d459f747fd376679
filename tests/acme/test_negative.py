"""Every JWS / nonce / content-type / url / payload violation
(and every breach of the header rules) against every POST endpoint returns its RFC 8555 error (with a fresh Replay-Nonce), never a 500;
fuzzed JWS, JWK and CSR inputs raise nothing but ``AcmeError``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustyard.acme.jws import parse_jwk, parse_jws
from trustyard.acme.problems import AcmeError
from trustyard.x509.names import parse_name

from .client import JOSE, AccountKey, b64, csr_der
from .conftest import Env, authorize, issue, leaf, make_env, poll

ACME = "urn:ietf:params:acme:error:"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class World:
    """One account with an issued certificate and a pending order: every POST URL, filled in."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.acme = env.account()
        order, pem, _key = issue(self.acme, env.srv, "matrix.internal")
        self.cert_der = leaf(pem).public_bytes(Encoding.DER)
        pending = self.acme.new_order("pending.internal")
        authz_url = pending.json()["authorizations"][0]
        d = self.acme.directory
        self.endpoints: dict[str, tuple[str, str, Any]] = {  # name -> (url, key mode, a valid payload)
            "new-account": (d["newAccount"], "jwk", {"termsOfServiceAgreed": True}),
            "account": (self.acme.kid, "kid", None),
            "orders": (self.acme.kid + "/orders", "kid", None),
            "key-change": (d["keyChange"], "kid", {}),
            "new-order": (d["newOrder"], "kid", {"identifiers": [{"type": "dns", "value": "n.internal"}]}),
            "order": (pending.headers["Location"], "kid", None),
            "finalize": (pending.json()["finalize"], "kid", {"csr": "AAAA"}),
            "authz": (authz_url, "kid", None),
            "chall": (self.acme.post(authz_url).json()["challenges"][0]["url"], "kid", None),
            "cert": (order["certificate"], "kid", None),
            "revoke-cert": (d["revokeCert"], "either", {"certificate": b64(self.cert_der)}),
        }

    def header(self, url: str, mode: str, key: AccountKey | None = None) -> dict[str, Any]:
        key = key or self.acme.key
        header: dict[str, Any] = {"alg": key.alg, "nonce": self.acme.nonce(), "url": url}
        if mode == "jwk":
            header["jwk"] = key.jwk
        else:
            header["kid"] = self.acme.kid
        return header


# Each violation: (name, applies to key modes, build(world, url, mode, payload) -> (body, headers), status, type)
Build = Callable[[World, str, str, Any], tuple[bytes, dict[str, str]]]


def signed(world: World, header: dict[str, Any], payload: Any, key: AccountKey | None = None) -> bytes:
    return json.dumps((key or world.acme.key).jws(header, payload)).encode()


def with_header(change: Callable[[dict[str, Any], World, str], None]) -> Build:
    def build(world: World, url: str, mode: str, payload: Any) -> tuple[bytes, dict[str, str]]:
        header = world.header(url, mode)
        change(header, world, url)
        return signed(world, header, payload), JOSE
    return build


def raw(body: Callable[[World, str, str, Any], bytes], headers: dict[str, str] = JOSE) -> Build:
    return lambda w, u, m, p: (body(w, u, m, p), headers)


def _reused_nonce(world: World, url: str, mode: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    header = world.header(url, mode)
    world.env.http.post(url, content=signed(world, header, payload), headers=JOSE)  # spends it (any outcome)
    return signed(world, header, payload), JOSE


def _bad_signature(world: World, url: str, mode: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    jws = world.acme.key.jws(world.header(url, mode), payload)
    jws["signature"] = b64(b"\x01" * 64)
    return json.dumps(jws).encode(), JOSE


def _foreign_key(world: World, url: str, mode: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    other = AccountKey()  # kid says the account, the signature is another key's
    return signed(world, world.header(url, mode), payload, other), JOSE


def _jwk_change(members: dict[str, Any]) -> Callable[[dict[str, Any], World, str], None]:
    def change(header: dict[str, Any], world: World, url: str) -> None:
        header.pop("kid", None)
        header["jwk"] = {**world.acme.key.jwk, **members}
    return change


def _small_rsa(header: dict[str, Any], world: World, url: str) -> None:
    numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    header.pop("kid", None)
    header["alg"] = "RS256"
    header["jwk"] = {"kty": "RSA", "n": b64(numbers.n.to_bytes(128, "big")), "e": "AQAB"}


def _payload(text: str) -> Build:
    def build(world: World, url: str, mode: str, payload: Any) -> tuple[bytes, dict[str, str]]:
        jws = world.acme.key.jws(world.header(url, mode), None)
        jws["payload"] = text
        header_b64 = jws["protected"]
        jws["signature"] = b64(world.acme.key.sign_raw(f"{header_b64}.{text}".encode()))
        return json.dumps(jws).encode(), JOSE
    return build


def _valid_body(w: World, u: str, m: str, p: Any) -> bytes:
    return signed(w, w.header(u, m), p)


ALL, KID, JWK = ("jwk", "kid", "either"), ("kid", "either"), ("jwk",)
VIOLATIONS: list[tuple[str, tuple[str, ...], Build, int, str]] = [
    ("content-type json", ALL, raw(_valid_body, {"Content-Type": "application/json"}), 415, "malformed"),
    ("content-type missing", ALL, raw(_valid_body, {}), 415, "malformed"),
    ("body too large", ALL, raw(lambda w, u, m, p: b" " * (70 * 1024)), 413, "malformed"),
    ("body not json", ALL, raw(lambda w, u, m, p: b"{not json"), 400, "malformed"),
    ("body json array", ALL, raw(lambda w, u, m, p: b"[]"), 400, "malformed"),
    ("unprotected header", ALL, raw(lambda w, u, m, p: json.dumps(
        {**json.loads(_valid_body(w, u, m, p)), "header": {"kid": "x"}}).encode()), 400, "malformed"),
    ("general serialization", ALL, raw(lambda w, u, m, p: json.dumps(
        {"payload": "", "signatures": [{"protected": "e30", "signature": ""}]}).encode()), 400, "malformed"),
    ("protected not base64url", ALL, raw(lambda w, u, m, p: json.dumps(
        {"protected": "e30=", "payload": "", "signature": ""}).encode()), 400, "malformed"),
    ("protected not json", ALL, raw(lambda w, u, m, p: json.dumps(
        {"protected": b64("nope"), "payload": "", "signature": ""}).encode()), 400, "malformed"),
    ("alg none", ALL, with_header(lambda h, w, u: h.update(alg="none")), 400, "badSignatureAlgorithm"),
    ("alg HS256", ALL, with_header(lambda h, w, u: h.update(alg="HS256")), 400, "badSignatureAlgorithm"),
    ("alg missing", ALL, with_header(lambda h, w, u: h.pop("alg")), 400, "badSignatureAlgorithm"),
    ("alg does not fit key", ALL, with_header(lambda h, w, u: h.update(alg="ES384")), 400,
     "badSignatureAlgorithm"),
    ("crit header", ALL, with_header(lambda h, w, u: h.update(crit=["exp"])), 400, "malformed"),
    ("jwk and kid", ALL, with_header(lambda h, w, u: h.update(jwk=w.acme.key.jwk, kid=w.acme.kid)), 400,
     "malformed"),
    ("neither jwk nor kid", ALL, with_header(lambda h, w, u: (h.pop("jwk", None), h.pop("kid", None))), 400,
     "malformed"),
    ("jwk where kid is required", ("kid",), with_header(_jwk_change({})), 400, "malformed"),
    ("kid where jwk is required", JWK, with_header(lambda h, w, u: (h.pop("jwk"), h.update(kid=w.acme.kid))),
     400, "malformed"),
    ("url missing", ALL, with_header(lambda h, w, u: h.pop("url")), 400, "malformed"),
    ("url of another resource", ALL, with_header(lambda h, w, u: h.update(url=u + "x")), 403, "unauthorized"),
    ("url not a string", ALL, with_header(lambda h, w, u: h.update(url=["x"])), 400, "malformed"),
    ("nonce missing", ALL, with_header(lambda h, w, u: h.pop("nonce")), 400, "badNonce"),
    ("nonce unknown", ALL, with_header(lambda h, w, u: h.update(nonce="AAAAAAAAAAAAAAAAAAAAAA")), 400, "badNonce"),
    ("nonce not a string", ALL, with_header(lambda h, w, u: h.update(nonce=12)), 400, "badNonce"),
    ("nonce reused", ALL, _reused_nonce, 400, "badNonce"),
    ("signature wrong", ALL, _bad_signature, 400, "malformed"),
    ("signed by another key", KID, _foreign_key, 400, "malformed"),
    ("kid unknown", KID, with_header(lambda h, w, u: h.update(kid=w.acme.kid + "nope")), 400,
     "accountDoesNotExist"),
    ("kid of another directory", KID, with_header(lambda h, w, u: h.update(kid="http://evil/acme/acme/account/x")),
     400, "accountDoesNotExist"),
    ("jwk with private part", JWK, with_header(_jwk_change({"d": "AAAA"})), 400, "badPublicKey"),
    ("jwk off the curve", JWK, with_header(_jwk_change({"y": b64(b"\x01" * 32)})), 400, "badPublicKey"),
    ("jwk RSA 1024", JWK, with_header(_small_rsa), 400, "badPublicKey"),
    ("jwk unknown kty", JWK, with_header(_jwk_change({"kty": "oct"})), 400, "badPublicKey"),
    ("payload not base64url", ALL, _payload("%%%"), 400, "malformed"),
    ("payload json array", ALL, _payload(b64("[1]")), 400, "malformed"),
    ("payload not json", ALL, _payload(b64("{nope")), 400, "malformed"),
]
ENDPOINTS = ["new-account", "account", "orders", "key-change", "new-order", "order", "finalize", "authz", "chall",
             "cert", "revoke-cert"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, challtestsrv: Any) -> Iterator[World]:
    from trustyard.ca.home import InitOptions, init_home

    from ..support import PASSWORD
    from .conftest import ALLOW

    home = tmp_path_factory.mktemp("matrix") / "ca"
    init_home(home, PASSWORD, InitOptions(allow=ALLOW))
    for env in make_env(home, challtestsrv):
        yield World(env)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_negative_matrix(world: World, endpoint: str) -> None:
    url, mode, payload = world.endpoints[endpoint]
    checked = 0
    for name, modes, build, status, kind in VIOLATIONS:
        if mode not in modes:
            continue
        body, headers = build(world, url, mode, payload)
        response = world.env.http.post(url, content=body, headers=headers)
        where = f"{endpoint} / {name}: {response.status_code} {response.text[:300]}"
        assert response.status_code != 500, where
        assert response.status_code == status, where
        assert response.headers["content-type"] == "application/problem+json", where
        assert response.json()["type"] == ACME + kind, where
        assert response.headers.get("Replay-Nonce"), where
        checked += 1
    assert checked >= 30
    # and the untouched request is accepted: the violations, not the fixture, caused the errors
    ok = world.env.http.post(url, content=_valid_body(world, url, mode, payload), headers=JOSE)
    assert ok.status_code < 500 and ok.headers["Replay-Nonce"]


def test_every_badnonce_carries_a_nonce_that_works(world: World) -> None:
    url, mode, _ = world.endpoints["account"]
    header = world.header(url, mode)
    header["nonce"] = "AAAAAAAAAAAAAAAAAAAAAA"
    refused = world.env.http.post(url, content=signed(world, header, None), headers=JOSE)
    assert refused.json()["type"] == ACME + "badNonce"
    header["nonce"] = refused.headers["Replay-Nonce"]
    accepted = world.env.http.post(url, content=signed(world, header, None), headers=JOSE)
    assert accepted.status_code == 200, accepted.text


# -- fuzzing -------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                             children, max_size=4),
                           max_leaves=12)
b64ish = st.one_of(st.text(alphabet="ABCDEFabcdef0123456789-_=+/%", max_size=90), st.binary(max_size=70).map(b64))


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["protected", "payload", "signature", "header"]),
                           st.one_of(b64ish, json_values), max_size=4),
       header=st.dictionaries(st.sampled_from(["alg", "nonce", "url", "jwk", "kid", "crit", "b64"]), json_values))
def test_fuzz_jws_parsing(doc: dict[str, Any], header: dict[str, Any]) -> None:
    for candidate in (doc, {"protected": b64(json.dumps(header)), "payload": "", "signature": ""}):
        with contextlib.suppress(AcmeError):
            parse_jws(json.dumps(candidate).encode())


@FUZZ
@given(jwk=st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]),
                           st.one_of(st.sampled_from(["EC", "RSA", "OKP", "P-256", "P-384", "P-521", "Ed25519", "AQAB"]),
                                     b64ish, json_values), max_size=6))
def test_fuzz_jwk_parsing(jwk: dict[str, Any]) -> None:
    with contextlib.suppress(AcmeError):
        parse_jwk(jwk)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
       endpoint=st.sampled_from(ENDPOINTS))
def test_fuzz_bodies_through_every_endpoint(world: World, body: bytes, endpoint: str) -> None:
    url = world.endpoints[endpoint][0]
    response = world.env.http.post(url, content=body, headers=JOSE)
    assert 400 <= response.status_code < 500 and response.headers["Replay-Nonce"], response.text


@pytest.fixture(scope="module")
def ready_order(world: World) -> tuple[str, str]:
    acme = world.acme
    response = acme.new_order("fuzz.internal")
    authorize(acme, world.env.srv, response.json())
    order = poll(acme, response.headers["Location"], ("ready",))
    return response.headers["Location"], order["finalize"]


VALID_CSR = csr_der(ec.generate_private_key(ec.SECP256R1()), [parse_name("fuzz.internal")])


@FUZZ
@given(mutations=st.lists(st.tuples(st.integers(0, len(VALID_CSR) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, len(VALID_CSR)))
def test_fuzz_csr_at_finalize(world: World, ready_order: tuple[str, str], mutations: list[tuple[int, int]],
                              cut: int) -> None:
    data = bytearray(VALID_CSR[:cut] if cut < 40 else VALID_CSR)
    for position, value in mutations:
        if position < len(data):
            data[position] = value
    if bytes(data) == VALID_CSR:
        return
    response = world.acme.post(ready_order[1], {"csr": b64(bytes(data))})
    assert response.status_code in (400, 403), response.text
    assert response.json()["type"] in (ACME + "badCSR", ACME + "orderNotReady", ACME + "rejectedIdentifier")


def test_an_unknown_directory_is_a_404_problem_not_a_500(world: World) -> None:
    url, mode, payload = world.endpoints["new-order"]
    elsewhere = url.replace("/acme/acme/", "/acme/nope/")
    header = world.header(elsewhere, mode)
    response = world.env.http.post(elsewhere, content=signed(world, header, payload), headers=JOSE)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == ACME + "malformed" and "ACME provisioner" in response.json()["detail"]
    assert response.headers.get("Replay-Nonce") and "Link" not in response.headers
