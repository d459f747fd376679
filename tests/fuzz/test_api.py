"""The HTTP API answers 4xx, never 500, for fuzzed requests on every route.

One in-process app (the CA with its ACME directory, as ``trustyard serve`` builds it) is
driven through Starlette's TestClient. Routes are enumerated from the app itself and checked
against ``/openapi.json``, so a new route is fuzzed without anyone remembering to add it.
Three depths:

- every route with fuzzed method, path parameters, query, headers and body;
- the REST issuance routes with real credentials (a valid token, a proof signed by a key the
  attacker owns or by a certificate's key) and hostile fields, so the fuzz reaches the policy
  and the ledger;
- every ACME POST resource with a correctly signed JWS (real account, fresh nonce, right url)
  around a hostile payload or protected header.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import assume, example, given
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca import proofs
from trustyard.ca.authority import Authority
from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.x509.keys import KeyType, generate_private_key

from ..acme.client import AccountKey, Acme
from ..support import PASSWORD, csr_pem, new_csr
from .strategies import b64url, budget, json_values, mutated, pem_of, replaced_values
from .test_credentials import CERT, T, _proof_claims, _sign
from .test_credentials import KEY as SELF_KEY
from .test_csr import SEEDS as CSR_SEEDS

DIRECTORY = "http://testserver/acme/acme/directory"


class Api:
    def __init__(self, http: TestClient, authority: Authority, admin: str) -> None:
        self.http, self.authority, self.admin = http, authority, admin
        self.acme: Acme | None = None
        self.issued: tuple[Any, x509.Certificate] | None = None

    def account(self) -> Acme:
        if self.acme is None:
            self.acme = Acme(self.http, DIRECTORY)
            assert self.acme.register().status_code == 201
        return self.acme

    def certificate(self) -> tuple[Any, x509.Certificate]:
        """A certificate this CA issued, and its key (for proofs the ledger accepts)."""
        if self.issued is None:
            key, csr = new_csr("fuzz.internal")
            token = self.authority.mint_token("default", "fuzz.internal", ["fuzz.internal"])
            response = self.http.post("/v1/sign", json={"csr": csr.decode(), "token": token})
            assert response.status_code == 201, response.text
            self.issued = (key, x509.load_pem_x509_certificate(response.json()["certificate"].encode()))
        return self.issued


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("fuzz-api") / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "10.0.0.0/8", "spiffe://prod.internal/*")))
    authority = load_authority(home, PASSWORD, minting=True)
    with TestClient(create_app(authority, load_config(home)), raise_server_exceptions=False) as http:
        yield Api(http, authority, (home / "admin.token").read_text().strip())
    authority.store.close()


def assert_not_5xx(response: Any, what: Any = "") -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])


# -- every route ------------------------------------------------------------------------------

def routes(http: TestClient) -> list[Route]:
    return [r for r in http.app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]


def test_every_documented_route_is_fuzzed(api: Api) -> None:
    """The fuzzer's route list is the app's; every path /openapi.json documents is in it."""
    templates = {r.path for r in routes(api.http)}
    documented = set(api.http.get("/openapi.json").json()["paths"])
    assert documented <= templates, documented - templates
    assert any(t.startswith("/acme/{provisioner}/") for t in templates)


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_param = st.one_of(st.text(max_size=30), st.sampled_from(["acme", "default", "..", "%2e%2e", "0", "a" * 300, "-1",
                                                          "DEADBEEF", "x.y", "AAAA.AQ", "AAAA.gA", "_-_-"]))
_content_types = st.sampled_from(["application/json", "application/jose+json", "text/plain", "",
                                  "application/json; charset=utf-16", "multipart/form-data; boundary=x",
                                  "APPLICATION/JSON"])


def _bodies() -> st.SearchStrategy[bytes]:
    valid = [json.dumps({"csr": "x", "token": "y"}).encode(), json.dumps({"serial": "01", "reason": "superseded"}).encode(),
             json.dumps({"protected": "e30", "payload": "", "signature": ""}).encode()]
    return st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                     st.sampled_from(valid).flatmap(mutated), st.just(b"[" * 50_000), st.just(b"{" * 100 + b"}" * 100),
                     st.just(b"\x00" * 70_000))


@st.composite
def requests(draw: st.DrawFn, route_list: list[Route]) -> dict[str, Any]:
    route = draw(st.sampled_from(route_list))
    methods = sorted(route.methods or {"GET"})
    method = draw(st.sampled_from([*methods, "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = route.path
    for name in re.findall(r"{(\w+)(?::\w+)?}", route.path):
        value = draw(_param)
        safe = draw(st.sampled_from(["", "%/.\\"]))  # encoded, or raw dot segments and escapes
        path = re.sub(r"{" + name + r"(?::\w+)?}", (quote(value, safe=safe) or "x").replace("\\", "\\\\"), path,
                      count=1)
    query = draw(st.dictionaries(st.sampled_from(["limit", "offset", "status", "x", "serial"]),
                                 _param | st.integers(-(2**70), 2**70).map(str), max_size=3))
    headers = {"content-type": draw(_content_types)}
    auth = draw(st.sampled_from(["", "admin", "Bearer x", "Basic abc", "bearer ", "Bearer " + "a" * 300]))
    if auth:
        headers["authorization"] = auth
    for name in draw(st.lists(st.sampled_from(["accept", "if-none-match", "host", "x-forwarded-for"]),
                              max_size=2, unique=True)):
        headers[name] = draw(_header_text)
    return {"method": method, "url": path, "params": query, "headers": headers, "content": draw(_bodies())}


@pytest.fixture(scope="module")
def route_list(api: Api) -> list[Route]:
    return routes(api.http)


def test_fuzzed_requests_on_every_route_never_answer_5xx(api: Api, route_list: list[Route]) -> None:
    @budget(200)
    @given(requests(route_list))
    @example({"method": "GET", "url": "/v1/certificates", "params": {"offset": "9" * 30}, "headers": {
        "authorization": "admin"}, "content": b""})
    @example({"method": "GET", "url": "/v1/certificates", "params": {"limit": "-9" + "9" * 30}, "headers": {
        "authorization": "admin"}, "content": b""})
    def run(request: dict[str, Any]) -> None:
        headers = dict(request["headers"])
        if headers.get("authorization") == "admin":
            headers["authorization"] = "Bearer " + api.admin
        if request["url"] == "/healthz":
            return  # 503 is its designed answer when the database is down
        response = api.http.request(request["method"], request["url"], params=request["params"],
                                    headers=headers, content=request["content"])
        assert_not_5xx(response, request)
        if response.status_code >= 400 and request["method"] != "HEAD":
            assert "problem+json" in response.headers.get("content-type", ""), response.headers

    run()


# -- REST issuance with real credentials ------------------------------------------------------

@budget(80)
@given(st.one_of(st.sampled_from(CSR_SEEDS).flatmap(mutated).map(lambda d: d.decode("latin-1")),
                 st.sampled_from(CSR_SEEDS).map(lambda d: base64.b64encode(d).decode()), st.text(max_size=50)))
def test_sign_with_a_valid_token_and_a_hostile_csr(api: Api, csr: str) -> None:
    token = api.authority.mint_token("default", "a.internal", [])
    response = api.http.post("/v1/sign", json={"csr": csr, "token": token})
    assert response.status_code in (201, 400, 401, 403), response.text


@budget(60)
@given(st.one_of(st.text(max_size=20), st.sampled_from(["30d", "1h", "0s", "-5m", "1e9h", "24H", "1.5h"])))
@example("9999999999999d")
@example("99999999999999999999y")
def test_sign_with_a_hostile_ttl_is_4xx(api: Api, ttl: str) -> None:
    """Any text in ``ttl`` (huge, negative, exponent, garbage) is issued or refused with a 4xx, never a 500."""
    _key, csr = new_csr("ttl.internal")
    token = api.authority.mint_token("default", "ttl.internal", ["ttl.internal"])
    response = api.http.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": ttl})
    assert response.status_code in (201, 400, 403), response.text


@budget(80)
@given(replaced_values(_proof_claims(), json_values | st.sampled_from([T, str(T), T + 60, "x", None])),
       st.booleans())
@example({**_proof_claims(), "exp": str(T + 60), "iat": str(T)}, False)
@example({**_proof_claims(), "exp": str(T + 60), "iat": str(T)}, True)
def test_renew_and_revoke_with_hostile_proofs_are_4xx(api: Api, claims: dict[str, Any], issued: bool) -> None:
    """Proofs signed by a key the attacker owns (any certificate in x5c), or by the key of a
    certificate this CA issued so the ledger lookup runs too."""
    if issued:
        key, cert = api.certificate()
    else:
        key, cert = SELF_KEY, CERT
    x5c = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]
    for audience, path in ((proofs.RENEW, "/v1/renew"), (proofs.REVOKE, "/v1/revoke")):
        token = _sign({**claims, "aud": claims.get("aud", audience)} if "aud" in claims else claims, key, {"x5c": x5c})
        if path == "/v1/renew":
            body = {"csr": csr_pem(key, [x509.DNSName("fuzz.internal")]).decode(), "proof": token}
        else:
            body = {"serial": str(claims.get("serial", "01"))[:80], "proof": token, "reason": "superseded"}
        response = api.http.post(path, json=body)
        assert_not_5xx(response, (path, claims))


@budget(100)
@given(st.one_of(st.text(max_size=60), st.sampled_from(["0", "00", "-1", "0x10", "f" * 200, "\uff21\uff22", "1e5", " 01 "])),
       st.one_of(st.text(max_size=20), st.sampled_from(["keyCompromise", "superseded", "unspecified"])))
def test_admin_revoke_and_lookup_with_hostile_serials_are_4xx(api: Api, serial: str, reason: str) -> None:
    admin = {"Authorization": "Bearer " + api.admin}
    assert_not_5xx(api.http.post("/v1/revoke", json={"serial": serial, "reason": reason + "-no"}, headers=admin))
    assert_not_5xx(api.http.get("/v1/certificates/" + quote(serial, safe=""), headers=admin))


# -- ACME with correctly signed requests --------------------------------------------------------

_ACME_RESOURCES = ["newAccount", "newOrder", "revokeCert", "keyChange", "account", "orders", "order", "finalize",
                   "authz"]


def _identifiers() -> st.SearchStrategy[Any]:
    ident = st.fixed_dictionaries({"type": st.sampled_from(["dns", "ip", "email", "uri", ""]) | json_values,
                                   "value": st.sampled_from(["a.internal", "*.internal", "10.0.0.1", "::1", "a..b",
                                                             "é.internal", "127.0.0.1", "*.*.internal", ""])
                                   | st.text(max_size=30) | json_values})
    return st.one_of(st.lists(ident, max_size=4), json_values)


@st.composite
def acme_payloads(draw: st.DrawFn, resource: str, cert_b64: str, account: AccountKey) -> Any:
    if resource == "newOrder":
        base: dict[str, Any] = {"identifiers": [{"type": "dns", "value": "a.internal"}]}
        if draw(st.booleans()):
            base["identifiers"] = draw(_identifiers())
    elif resource == "revokeCert":
        base = {"certificate": draw(st.one_of(st.just(cert_b64), mutated(base64.urlsafe_b64decode(
            cert_b64 + "==")).map(b64url), json_values)), "reason": draw(json_values | st.integers(-2, 12))}
    elif resource == "finalize":
        base = {"csr": draw(st.sampled_from(CSR_SEEDS).flatmap(mutated).map(b64url) | json_values)}
    elif resource in ("newAccount", "account"):
        base = {"contact": draw(st.lists(st.text(max_size=30).map(lambda t: "mailto:" + t), max_size=3) | json_values),
                "termsOfServiceAgreed": draw(json_values), "status": draw(st.sampled_from(["valid", "revoked"])
                                                                        | json_values)}
    elif resource == "keyChange":
        inner = account.jws({"alg": account.alg, "url": "x", "jwk": account.jwk}, {"account": "x", "oldKey": {}})
        base = draw(replaced_values(inner))
    else:
        base = {}
    return draw(st.one_of(st.just(base), replaced_values(base), json_values, st.just(None)))


def test_signed_acme_requests_with_hostile_payloads_never_answer_5xx(api: Api) -> None:
    acme = api.account()
    _key, cert = api.certificate()
    cert_b64 = b64url(cert.public_bytes(Encoding.DER))
    order = acme.new_order("order.internal")
    assert order.status_code == 201, order.text
    order_url, order_doc = order.headers["Location"], order.json()
    targets = {"order": order_url, "finalize": order_doc["finalize"], "authz": order_doc["authorizations"][0],
               "account": acme.kid, "orders": acme.kid + "/orders"}

    @budget(150)
    @given(st.sampled_from(_ACME_RESOURCES).flatmap(lambda r: st.tuples(
        st.just(r), acme_payloads(r, cert_b64, acme.key),
        st.dictionaries(st.sampled_from(["alg", "nonce", "url", "kid", "jwk", "crit", "b64"]),
                        json_values | st.sampled_from(["ES256", "none", "HS256", acme.kid or "", DIRECTORY]),
                        max_size=2),
        st.booleans())))
    def run(case: tuple[str, Any, dict[str, Any], bool]) -> None:
        resource, payload, protected, use_jwk = case
        # a deactivated account would turn every later example into the same 403
        assume(not (resource == "account" and isinstance(payload, dict) and payload.get("status") == "deactivated"))
        url = targets.get(resource) or acme.directory[resource]
        response = acme.post(url, payload, protected=protected, use_jwk=use_jwk or resource == "newAccount",
                             retries=1)
        assert_not_5xx(response, case)

    run()


@budget(100)
@given(st.one_of(_param, st.builds(lambda a, s: f"{b64url(a)}.{b64url(s)}", st.binary(max_size=24),
                                   st.binary(max_size=24))))
def test_renewal_info_with_hostile_ids_is_4xx(api: Api, cert_id: str) -> None:
    response = api.http.get("/acme/acme/renewal-info/" + quote(cert_id, safe=""))
    assert_not_5xx(response, cert_id)



RENEW_CSR = x509.load_pem_x509_csr(csr_pem(generate_private_key(KeyType.EC_P256), [x509.DNSName("fuzz.internal")])
                                   ).public_bytes(Encoding.DER)


@budget(60)
@given(st.one_of(mutated(RENEW_CSR), st.just(RENEW_CSR)), st.booleans())
def test_renew_with_a_valid_proof_and_a_hostile_csr_is_never_5xx(api: Api, csr_der: bytes, as_pem: bool) -> None:
    """The proof is good and covers the CSR, so the fuzz reaches CSR checks, policy and signing."""
    from trustyard.x509.csr import CSRError, parse_csr

    key, cert = api.certificate()
    try:
        digest = proofs.csr_digest(parse_csr(csr_der).der)
    except CSRError:
        digest = proofs.csr_digest(csr_der)
    token = proofs.make(key, [cert], proofs.RENEW, csr_sha256=digest)
    csr = pem_of("CERTIFICATE REQUEST", csr_der).decode() if as_pem else csr_der.decode("latin-1")
    response = api.http.post("/v1/renew", json={"csr": csr, "proof": token})
    assert response.status_code in (201, 400, 401, 403, 409), response.text
