"""SPIFFE IDs and URI patterns are exact.

One function (``trustyard.policy.uris.uri_matches``) decides whether a URI matches a
pattern, for issuance (``policy.rules``, used by the CA for REST and ACME) and for the mTLS
identity policy (``tls.policy``); it only ever matches URIs in normal form. Issuance refuses
a URI SAN that is not in normal form, naming the rule and the value.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from trustyard.ca import tokens
from trustyard.ca.authority import Authority
from trustyard.errors import PolicyDenied
from trustyard.policy import IssuanceRequest, NamePattern, Policy, parse_patterns, uris
from trustyard.policy.uris import uri_matches, uri_problem
from trustyard.testing import TestCA
from trustyard.tls import IdentityPattern, IdentityPolicy, peer_identity
from trustyard.x509.keys import KeyType, generate_private_key

from .support import csr_pem

BILLING = "spiffe://prod.internal/billing/*"

# Each of these would pass a naive prefix test against BILLING (or against spiffe://*).
NOT_NORMAL = [
    "spiffe://prod.internal/billing/../admin",
    "spiffe://prod.internal/billing/./eu",
    "spiffe://prod.internal/billing/eu/..",
    "spiffe://prod.internal/billing/%2e%2e/admin",
    "spiffe://prod.internal/billing/%2E%2E/admin",
    "spiffe://prod.internal/billing/e%75",
    "spiffe://prod.internal/billing/eu%2Fx",
    "spiffe://prod.internal/billing//eu",
    "spiffe://prod.internal/billing/eu/",
    "spiffe://prod.internal/billing/",
    "spiffe://prod.internal/billing/eu?admin=1",
    "spiffe://prod.internal/billing/eu#admin",
    "spiffe://prod.internal/billing/..\\admin",
    "spiffe://prod.internal/billing/eu:443",
    "spiffe://prod.internal/billing/eu@x",
    "spiffe://prod.internal/billing/eu~x",
    "spiffe://prod.internal/billing/e u",
    "spiffe://prod.internal/billing/\u00e9u",
    "spiffe://prod.internal/billing/eu\x00",
    "spiffe://prod.internal/billing/" + "a" * 2100,
]
# ...and these against the catch-all prefix spiffe://*: port, userinfo, case, empty domain.
NOT_NORMAL_AUTHORITY = [
    "spiffe://prod.internal:443/billing/eu",
    "spiffe://admin@prod.internal/billing/eu",
    "spiffe://user:pw@prod.internal/billing/eu",
    "spiffe://Prod.Internal/billing/eu",
    "spiffe://prod%2Einternal/billing/eu",
    "spiffe:///billing/eu",
    "spiffe://prod.internal/",
]
# What can be put into a certificate's URI SAN (IA5String: ASCII only).
NOT_NORMAL_SANS = [v for v in NOT_NORMAL + NOT_NORMAL_AUTHORITY if v.isascii()]
NORMAL = [
    "spiffe://prod.internal/billing/eu",
    "spiffe://prod.internal/billing/eu/v2",
    "spiffe://prod.internal/billing/Eu_2.x-y",
    "spiffe://prod.internal/billing/...",
]


class TestMatcher:
    @pytest.mark.parametrize("value", NOT_NORMAL)
    def test_a_prefix_never_matches_a_uri_out_of_normal_form(self, value: str) -> None:
        assert value.startswith(BILLING[:-1])  # a naive prefix test would let it in
        assert uri_problem(value) is not None
        assert not uri_matches(BILLING, value)
        assert not uri_matches("spiffe://*", value)

    @pytest.mark.parametrize("value", NOT_NORMAL_AUTHORITY)
    def test_spiffe_authority_rules(self, value: str) -> None:
        assert uri_problem(value) is not None
        assert not uri_matches("spiffe://*", value)

    @pytest.mark.parametrize("value", NORMAL)
    def test_normal_ids_match(self, value: str) -> None:
        assert uri_problem(value) is None
        assert uri_matches(BILLING, value) and uri_matches("spiffe://*", value)

    def test_exact_patterns_and_the_prefix_needs_a_rest(self) -> None:
        assert uri_matches("spiffe://prod.internal/orders", "spiffe://prod.internal/orders")
        assert not uri_matches("spiffe://prod.internal/orders", "spiffe://prod.internal/orders/x")
        assert not uri_matches("spiffe://prod.internal/orders/*", "spiffe://prod.internal/orders/")
        assert uri_matches("spiffe://prod.internal", "spiffe://prod.internal")  # a trust domain ID

    def test_scheme_is_lowercase_spiffe(self) -> None:
        assert uri_problem("SPIFFE://prod.internal/billing/eu") is not None
        assert uri_problem("Spiffe://prod.internal/billing/eu") is not None

    @pytest.mark.parametrize(("value", "ok"), [
        ("https://orders.internal/", True),
        ("https://orders.internal:8443/api/v1", True),
        ("https://orders.internal", True),
        ("https://[fd00::1]:8443/x", True),
        ("https://orders.internal/api/../admin", False),
        ("https://orders.internal/api//admin", False),
        ("https://orders.internal/api/%61dmin", False),
        ("https://evil@orders.internal/api", False),
        ("https://Orders.internal/api", False),
        ("HTTPS://orders.internal/api", False),
        ("https://orders.internal/api?x", False),
        ("https://orders.internal:http/api", False),
        ("orders.internal", False),
    ])
    def test_other_uris(self, value: str, ok: bool) -> None:
        assert (uri_problem(value) is None) is ok


class TestPatterns:
    @pytest.mark.parametrize("text", [
        "spiffe://prod.internal/billing/../*",
        "spiffe://prod.internal/billing//*",
        "spiffe://prod.internal/%62illing/*",
        "spiffe://prod.internal/billing?x=*",
        "spiffe://prod.internal:8443/*",
        "spiffe://ops@prod.internal/*",
        "spiffe://Prod.internal/*",
        "spiffe://prod.internal/",
        "spiffe://prod.internal/billing/../admin",
        "https://orders.internal/a/../b",
        "spiffe://prod.internal*",  # would match spiffe://prod.internal.evil/... and leave URIs unconstrained
        "https://orders*",
    ])
    def test_patterns_out_of_normal_form_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match="invalid URI pattern"):
            NamePattern.parse(text)
        with pytest.raises(ValueError):
            IdentityPattern.parse(text)

    @pytest.mark.parametrize("text", [BILLING, "spiffe://prod.internal/*", "spiffe://prod.internal/orders",
                                      "spiffe://*", "https://orders.internal/", "spiffe://prod.internal/bill*"])
    def test_normal_patterns_parse(self, text: str) -> None:
        assert NamePattern.parse(text).text == text


class TestOneFunction:
    """Issuance and the middleware decide with the same function and therefore agree."""

    @pytest.mark.parametrize("value", [*NOT_NORMAL_SANS, *NORMAL])
    def test_issuance_and_middleware_agree(self, value: str, ca: TestCA) -> None:
        san = x509.UniformResourceIdentifier(value)
        issuance = NamePattern.parse(BILLING).matches(san)
        who = peer_identity(ca.issue(san).cert)
        assert who is not None
        middleware = IdentityPolicy.from_toml(f"[[allow]]\nidentities = [{BILLING!r}]").allows(who, "GET", "/")
        assert issuance is middleware is uri_matches(BILLING, value) is (value in NORMAL)

    def test_both_call_uri_matches(self, monkeypatch: pytest.MonkeyPatch, ca: TestCA) -> None:
        calls: list[tuple[str, str]] = []
        real = uris.uri_matches

        def spy(pattern: str, value: str) -> bool:
            calls.append((pattern, value))
            return real(pattern, value)

        monkeypatch.setattr(uris, "uri_matches", spy)
        value = "spiffe://prod.internal/billing/eu"
        Policy("p", parse_patterns([BILLING])).check_names([x509.UniformResourceIdentifier(value)])
        assert calls == [(BILLING, value)]
        who = peer_identity(ca.issue(value).cert)
        assert who is not None
        assert IdentityPolicy.from_toml(f"[[allow]]\nidentities = [{BILLING!r}]").allows(who, "GET", "/")
        assert calls == [(BILLING, value), (BILLING, value)]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("Uris")


# -- issuance -------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", NOT_NORMAL_SANS)
def test_policy_refuses_a_uri_san_out_of_normal_form_naming_rule_and_value(value: str) -> None:
    # Even under a provisioner that allows every SPIFFE ID.
    policy = Policy("default", parse_patterns(["spiffe://*"]))
    request = IssuanceRequest((x509.UniformResourceIdentifier(value),), KeyType.EC_P256, "ec-p256", False, None,
                              NOW, NOW + timedelta(days=365))
    for decide in (lambda: policy.decide(request), lambda: policy.check_names(request.names)):
        with pytest.raises(PolicyDenied) as info:
            decide()
        assert info.value.rule == "uri_names_exact" and info.value.value == value
        assert info.value.status == 403


BAD_SPIFFE = "spiffe://prod.internal/billing/../admin"


def test_a_token_for_a_bad_spiffe_id_cannot_be_minted(authority: Authority) -> None:
    with pytest.raises(PolicyDenied) as info:
        authority.mint_token("default", BAD_SPIFFE, [])
    assert (info.value.rule, info.value.value) == ("uri_names_exact", BAD_SPIFFE)
    assert authority.store.list(limit=10) == []


@pytest.mark.parametrize("value", [BAD_SPIFFE, "spiffe://prod.internal/billing/%2e%2e/admin",
                                   "spiffe://prod.internal/billing//eu", "spiffe://prod.internal:1/billing",
                                   "spiffe://prod.internal/billing?x"])
def test_sign_refuses_a_csr_with_a_bad_spiffe_id(client: TestClient, authority: Authority, value: str) -> None:
    """A token that names the ID (minted around the policy, as a leaked provisioner key could) still
    cannot get it into a certificate: the CA's policy refuses it, 403 naming the rule and value."""
    prov = authority.provisioners["default"]
    token, _ = tokens.mint(prov.private_key, "default", value, [value], timedelta(minutes=5),  # type: ignore[arg-type]
                           now=datetime.now(UTC))
    csr = csr_pem(generate_private_key(KeyType.EC_P256), [x509.UniformResourceIdentifier(value)])
    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:trustyard:error:policyDenied"
    assert problem["rule"] == "uri_names_exact" and problem["value"] == value
    assert authority.store.list(limit=10) == []


def test_sign_issues_a_normal_spiffe_id(client: TestClient, authority: Authority) -> None:
    value = "spiffe://prod.internal/billing/eu"
    token = authority.mint_token("default", value, [])
    csr = csr_pem(generate_private_key(KeyType.EC_P256), [x509.UniformResourceIdentifier(value)])
    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert response.status_code == 201, response.text


# -- never a crash --------------------------------------------------------------------------------

@given(value=st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda t: "spiffe://prod.internal/" + t)))
def test_the_matcher_answers_every_string(value: str) -> None:
    problem = uri_problem(value)
    assert problem is None or isinstance(problem, str)
    assert uri_matches(BILLING, value) is (problem is None and value.startswith(BILLING[:-1])
                                           and len(value) > len(BILLING) - 1)
    with contextlib.suppress(ValueError):
        NamePattern.parse(value)
