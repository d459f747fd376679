"""peer_identity and IdentityPolicy, without the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.errors import ConfigError
from trustyard.testing import TestCA, self_signed
from trustyard.tls import IdentityPattern, IdentityPolicy, peer_identity
from trustyard.tls.paths import path_problem


class TestPeerIdentity:
    def test_uri_san_comes_first(self, ca: TestCA) -> None:
        leaf = ca.issue("orders.prod.internal", "10.0.0.7", "spiffe://prod.internal/orders")
        who = peer_identity(leaf.cert.public_bytes(Encoding.DER))
        assert who is not None
        assert who.name == "spiffe://prod.internal/orders"
        assert who.names == ("spiffe://prod.internal/orders", "orders.prod.internal", "10.0.0.7")
        assert who.serial == leaf.serial

    def test_dns_names_when_there_is_no_uri(self, ca: TestCA) -> None:
        leaf = ca.issue("a.internal", "b.internal")
        for source in (leaf.cert, leaf.cert.public_bytes(Encoding.PEM), leaf.cert.public_bytes(Encoding.PEM).decode()):
            who = peer_identity(source)
            assert who is not None and who.name == "a.internal" and who.dns_names == ("a.internal", "b.internal")

    def test_spiffe_preferred_over_other_uris(self, ca: TestCA) -> None:
        who = peer_identity(ca.issue("https://orders.internal/", "spiffe://prod.internal/orders").cert)
        assert who is not None and who.name == "spiffe://prod.internal/orders"

    def test_no_certificate(self) -> None:
        assert peer_identity(None) is None
        with pytest.raises(TypeError):
            peer_identity(42)  # type: ignore[arg-type]

    def test_self_signed(self) -> None:
        who = peer_identity(self_signed("legacy.internal").cert)
        assert who is not None and who.name == "legacy.internal"


class TestPatterns:
    @pytest.mark.parametrize(("pattern", "name", "expected"), [
        ("spiffe://prod.internal/orders", "spiffe://prod.internal/orders", True),
        ("spiffe://prod.internal/orders", "spiffe://prod.internal/orders/x", False),
        ("spiffe://prod.internal/*", "spiffe://prod.internal/orders", True),
        ("spiffe://prod.internal/*", "spiffe://prod.internal/", False),
        ("spiffe://prod.internal/*", "spiffe://staging.internal/orders", False),
        ("orders.internal", "ORDERS.internal", True),
        ("*.ops.internal", "a.b.ops.internal", True),
        ("*.ops.internal", "ops.internal", False),
        ("*.ops.internal", "spiffe://x.ops.internal", False),
        ("*", "anything.internal", True),
    ])
    def test_matches(self, pattern: str, name: str, expected: bool) -> None:
        assert IdentityPattern.parse(pattern).matches_name(name) is expected

    def test_star_inside_a_uri_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="may only end"):
            IdentityPattern.parse("spiffe://*/orders")


class TestSanTypes:
    """A rule matches only SANs of the type it names, whatever the SAN's text looks like."""

    @pytest.mark.parametrize(("pattern", "san"), [
        ("*.ops.internal", x509.UniformResourceIdentifier("alice.ops.internal")),
        ("alice.ops.internal", x509.UniformResourceIdentifier("alice.ops.internal")),
        ("spiffe://prod.internal/*", x509.DNSName("spiffe://prod.internal/orders")),
        ("spiffe://prod.internal/orders", x509.DNSName("spiffe://prod.internal/orders")),
        ("10.0.0.0/8", x509.DNSName("10.0.0.7")),
        ("10.0.0.0/8", x509.UniformResourceIdentifier("10.0.0.7")),
    ])
    def test_a_san_of_another_type_never_matches(self, ca: TestCA, pattern: str, san: x509.GeneralName) -> None:
        who = peer_identity(ca.issue(san).cert)
        assert who is not None
        policy = IdentityPolicy.from_toml(f"[[allow]]\nidentities = [{pattern!r}]")
        assert not IdentityPattern.parse(pattern).matches(who)
        assert not policy.allows(who, "GET", "/")

    @pytest.mark.parametrize(("pattern", "name"), [
        ("*.ops.internal", "alice.ops.internal"),
        ("spiffe://prod.internal/*", "spiffe://prod.internal/orders"),
        ("10.0.0.0/8", "10.0.0.7"),
    ])
    def test_the_right_type_matches(self, ca: TestCA, pattern: str, name: str) -> None:
        who = peer_identity(ca.issue(name).cert)
        assert who is not None and IdentityPattern.parse(pattern).matches(who)

    def test_sans_keep_their_types(self, ca: TestCA) -> None:
        who = peer_identity(ca.issue("a.internal", "10.0.0.7", "spiffe://prod.internal/a").cert)
        assert who is not None
        assert {type(s) for s in who.sans} == {x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier}


class TestPaths:
    @pytest.mark.parametrize("path", [
        "/a/../b", "/a/./b", "/..", "/.", "/a/..", "/a\\b", "/a\x00", "/a/%2e%2e/b", "/a/%2E./b", "/a%2fb",
        "/a%2Fb", "/a%5cb", "/a%5Cb", "/a%00", "/a/%2e",
    ])
    def test_ambiguous_paths(self, path: str, ca: TestCA) -> None:
        assert path_problem(path) is not None
        assert path_problem("/ok", path.encode()) is not None  # raw_path is checked too
        who = peer_identity(ca.issue("a.internal").cert)
        assert who is not None and not IdentityPolicy.from_toml("[[allow]]\nidentities = ['*']").allows(who, "GET", path)

    @pytest.mark.parametrize("path", ["/", "/a", "/a/b/", "//a", "/a..b/...", "/.well-known/x", "/a%20b", "/%41"])
    def test_plain_paths(self, path: str) -> None:
        assert path_problem(path, path.encode()) is None


class TestPolicyFile:
    POLICY = """
    [[allow]]
    identities = ["spiffe://prod.internal/billing"]
    paths = ["/invoices", "/refunds/"]
    methods = ["get", "POST"]
    """

    def test_load_and_decide(self, tmp_path: Path, ca: TestCA) -> None:
        path = tmp_path / "callers.toml"
        path.write_text(self.POLICY)
        policy = IdentityPolicy.load(path)
        billing = peer_identity(ca.issue("spiffe://prod.internal/billing").cert)
        other = peer_identity(ca.issue("spiffe://prod.internal/orders").cert)
        assert billing is not None and other is not None
        assert policy.allows(billing, "GET", "/invoices")
        assert policy.allows(billing, "POST", "/refunds/9")
        assert policy.allows(billing, "GET", "/invoices/x/")
        assert not policy.allows(billing, "DELETE", "/invoices")
        assert not policy.allows(billing, "GET", "/invoicesX")
        assert not policy.allows(billing, "GET", "/invoices/../admin")
        # Judged as routed, never normalized: these are not /invoices to the application either.
        assert not policy.allows(billing, "GET", "//invoices/x")
        assert not policy.allows(billing, "GET", "/invoices/./x")
        assert not policy.allows(billing, "GET", "/admin/../invoices")
        assert not policy.allows(other, "GET", "/invoices")

    def test_empty_policy_allows_nobody(self, ca: TestCA) -> None:
        who = peer_identity(ca.issue("a.internal").cert)
        assert who is not None and not IdentityPolicy.from_toml("").allows(who, "GET", "/")

    @pytest.mark.parametrize(("text", "message"), [
        ("[[allow]]\npaths = ['/']", "identities is required"),
        ("[[allow]]\nidentities = ['x.internal']\npaths = ['api']", "must start with /"),
        ("[[allow]]\nidentities = ['x.internal']\nmethods = ['FETCH']", "unknown HTTP method"),
        ("[[allow]]\nidentities = ['x.internal']\nmethod = ['GET']", "unknown key"),
        ("[[deny]]\nidentities = ['x.internal']", "unknown key"),
        ("[[allow]]\nidentities = []", "non-empty list"),
        ("[[allow]]\nidentities = ['spiffe://*/x']", "may only end"),
        ("[[allow]]\nidentities = ['x.internal']\npaths = ['/a/../admin']", "path segment"),
        ("[[allow]]\nidentities = ['x.internal']\npaths = ['/a%2fb']", "encoded character"),
        ("[[allow]]\nidentities = ['spiffe://prod.internal/a/../*']", "not in normal form|path segment"),
        ("allow = [", "not valid TOML"),
    ])
    def test_bad_policies_are_config_errors(self, text: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            IdentityPolicy.from_toml(text)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read identity policy"):
            IdentityPolicy.load(tmp_path / "nope.toml")
