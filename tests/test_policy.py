"""Policy rules, pure and exhaustive; and CSR parsing that never trusts its input."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from trustyard.errors import PolicyDenied
from trustyard.policy import IssuanceRequest, NamePattern, Policy, parse_patterns
from trustyard.policy.patterns import name_limits
from trustyard.x509.csr import CSRError, parse_csr
from trustyard.x509.keys import KeyType, generate_private_key
from trustyard.x509.names import parse_name

from .support import csr_pem

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("pattern,name,ok", [
    ("orders.prod.internal", "orders.prod.internal", True),
    ("orders.prod.internal", "billing.prod.internal", False),
    ("*.prod.internal", "orders.prod.internal", True),
    ("*.prod.internal", "a.b.prod.internal", True),
    ("*.prod.internal", "*.prod.internal", False),  # a wildcard needs a pattern that names it
    ("*.prod.internal", "prod.internal", False),
    ("*.prod.internal", "evilprod.internal", False),
    ("*.prod.internal", "orders.prod.internal.evil.com", False),
    ("10.0.0.0/8", "10.200.0.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.0.0.0/8", "orders.prod.internal", False),
    ("fd00::/8", "fd00::1", True),
    ("spiffe://prod.internal/*", "spiffe://prod.internal/ns/a", True),
    ("spiffe://prod.internal/*", "spiffe://prod.internal.evil/ns/a", False),
    ("spiffe://prod.internal/*", "spiffe://dev.internal/a", False),
    ("spiffe://prod.internal/orders", "spiffe://prod.internal/orders", True),
    ("spiffe://prod.internal/orders", "spiffe://prod.internal/orders2", False),
    ("*", "anything.example", True),
    ("*", "10.0.0.1", False),
])
def test_name_patterns(pattern: str, name: str, ok: bool) -> None:
    assert NamePattern.parse(pattern).matches(parse_name(name)) is ok


@pytest.mark.parametrize("bad", ["", "exa mple", "spiffe://a/*/b", "-bad-.internal", "a..b"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        NamePattern.parse(bad)


def _policy(**kw) -> Policy:  # type: ignore[no-untyped-def]
    return Policy(provisioner="default", allow=parse_patterns(["*.prod.internal", "10.0.0.0/8"]), **kw)


def _req(names: list[str], ttl: timedelta | None = None, key: KeyType | None = KeyType.EC_P256, ca: bool = False,
         issuer_left: timedelta = timedelta(days=365)) -> IssuanceRequest:
    return IssuanceRequest(names=tuple(parse_name(n) for n in names), key_type=key,
                           key_description=key.value if key else "rsa-1024", asks_for_ca=ca, ttl=ttl, now=NOW,
                           issuer_not_after=NOW + issuer_left)


def test_allowed_request_gets_default_ttl_and_backdate() -> None:
    decision = _policy().decide(_req(["orders.prod.internal", "10.1.1.1"]))
    assert decision.not_after - NOW == timedelta(hours=24)
    assert NOW - decision.not_before == timedelta(minutes=1)


@pytest.mark.parametrize("request_,rule,value", [
    (_req(["orders.dev.internal"]), "names_allowed", "orders.dev.internal"),
    (_req(["orders.prod.internal", "192.168.1.1"]), "names_allowed", "192.168.1.1"),
    (_req([]), "has_names", None),
    (_req(["a.prod.internal"], ca=True), "no_ca", "CA:TRUE"),
    (_req(["a.prod.internal"], ttl=timedelta(minutes=1)), "ttl_bounds", "1m"),
    (_req(["a.prod.internal"], ttl=timedelta(days=90)), "ttl_bounds", "90d"),
    (_req(["a.prod.internal"], key=None), "key_type_allowed", "rsa-1024"),
    (_req(["a.prod.internal"], issuer_left=timedelta(minutes=2)), "within_issuer", None),
])
def test_refusals_name_rule_and_value(request_: IssuanceRequest, rule: str, value: object) -> None:
    with pytest.raises(PolicyDenied) as info:
        _policy().decide(request_)
    assert info.value.rule == rule
    if value is not None:
        assert info.value.value == value
    assert info.value.status == 403


def test_key_type_allow_list() -> None:
    policy = _policy(key_types=(KeyType.EC_P256,))
    with pytest.raises(PolicyDenied) as info:
        policy.decide(_req(["a.prod.internal"], key=KeyType.RSA_2048))
    assert info.value.rule == "key_type_allowed"


def test_leaf_never_outlives_intermediate() -> None:
    decision = _policy().decide(_req(["a.prod.internal"], ttl=timedelta(days=20), issuer_left=timedelta(days=2)))
    assert decision.not_after == NOW + timedelta(days=2)


def test_name_constraints_follow_patterns() -> None:
    limits = name_limits(parse_patterns(["*.prod.internal", "orders.internal", "10.0.0.0/8",
                                         "spiffe://prod.internal/*"]))
    ext = limits.extension()
    assert ext is not None
    assert x509.DNSName("prod.internal") in ext.permitted_subtrees
    assert x509.DNSName("orders.internal") in ext.permitted_subtrees
    assert x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")) in ext.permitted_subtrees
    assert x509.UniformResourceIdentifier("prod.internal") in ext.permitted_subtrees
    assert ext.excluded_subtrees is None
    no_ips = name_limits(parse_patterns(["*.prod.internal"])).extension()
    assert no_ips is not None and x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")) in no_ips.excluded_subtrees
    any_dns = name_limits(parse_patterns(["*"])).extension()  # DNS open; IP, URI and email still shut
    assert any_dns is not None and not any(isinstance(n, x509.DNSName) for n in any_dns.permitted_subtrees)


# -- CSRs ----------------------------------------------------------------------------------------

def test_csr_names_come_from_san_and_dns_like_cn_only() -> None:
    key = generate_private_key(KeyType.EC_P256)
    req = parse_csr(csr_pem(key, [x509.DNSName("A.Prod.Internal.")], cn="b.prod.internal"))
    assert [n.value for n in req.names] == ["a.prod.internal", "b.prod.internal"]
    free_text = parse_csr(csr_pem(key, [x509.DNSName("a.prod.internal")], cn="My Service"))
    assert [n.value for n in free_text.names] == ["a.prod.internal"]


def test_csr_asking_for_ca_is_flagged() -> None:
    req = parse_csr(csr_pem(generate_private_key(KeyType.EC_P256), [x509.DNSName("a.internal")], ca=True))
    assert req.asks_for_ca


def test_csr_with_bad_signature_is_refused() -> None:
    key = generate_private_key(KeyType.EC_P256)
    pem = csr_pem(key, [x509.DNSName("a.internal")])
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(__import__("cryptography").hazmat.primitives
                                                             .serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit inside the signature
    with pytest.raises(CSRError) as info:
        parse_csr(bytes(der))
    assert info.value.code in ("badSignature", "badCSR")


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                                     b"\x30\x03\x02\x01\x00", b"\x30" * 5000, "é".encode() * 10])
def test_garbage_csr_is_a_csr_error(garbage: bytes) -> None:
    with pytest.raises(CSRError):
        parse_csr(garbage)


def test_oversized_csr_is_refused() -> None:
    with pytest.raises(CSRError, match="limit"):
        parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 20000)


def test_unsupported_name_types_are_refused() -> None:
    key = generate_private_key(KeyType.EC_P256)
    with pytest.raises(CSRError) as info:
        parse_csr(csr_pem(key, [x509.RFC822Name("a@b.internal")]))
    assert info.value.code == "badName"


# -- no gaps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["10.0.0.1", "127.0.0.1", "0x7f.1", "2130706433", "a.b.0x0a"])
def test_a_dns_name_that_reads_as_an_ip_is_refused(name: str) -> None:
    """A CSR's DNS SAN ``10.0.0.1`` under ``*`` would otherwise be an address no CIDR allowed."""
    policy = Policy(provisioner="any", allow=parse_patterns(["*"]))
    with pytest.raises(PolicyDenied) as info:
        policy.decide(IssuanceRequest(names=(x509.DNSName(name),), key_type=KeyType.EC_P256,
                                      key_description="ec-p256", asks_for_ca=False, ttl=None, now=NOW,
                                      issuer_not_after=NOW + timedelta(days=30)))
    assert info.value.rule == "dns_names_are_not_ips" and info.value.value == name
    with pytest.raises(PolicyDenied):
        policy.check_names([x509.DNSName(name)])
    policy.check_names([x509.DNSName("10.0.0.1.internal")])  # a name whose last label is a name is a name


WILDCARD_CASES = [
    # (pattern, wildcards = true?, requested name, allowed)
    ("*.prod.internal", False, "*.orders.prod.internal", False),  # wildcards are opt-in
    ("*.prod.internal", True, "*.orders.prod.internal", True),
    ("*.prod.internal", True, "*.a.b.prod.internal", True),
    ("*.prod.internal", True, "*.prod.internal", False),  # never the whole allowed zone
    ("*.prod.internal", True, "*.internal", False),
    ("*.internal", True, "*.internal", False),
    ("*.prod.internal", True, "orders.prod.internal", True),
    ("orders.prod.internal", True, "*.orders.prod.internal", False),  # an exact name has no "below"
    ("*.*.prod.internal", False, "*.orders.prod.internal", True),  # a pattern that names wildcards
    ("*.*.prod.internal", False, "*.prod.internal", False),
    ("*.*.prod.internal", False, "orders.prod.internal", False),  # and only wildcards
    ("*.*.prod.internal", False, "*.orders.dev.internal", False),
    ("=*.prod.internal", False, "*.prod.internal", True),  # the whole zone, said exactly
    ("=*.prod.internal", True, "*.orders.prod.internal", False),
    ("=*.prod.internal", False, "orders.prod.internal", False),
    ("=orders.prod.internal", False, "orders.prod.internal", True),
    ("*", False, "*.prod.internal", False),
    ("*", True, "*.prod.internal", True),
    ("*", True, "*.internal", False),  # a whole top-level domain
]


@pytest.mark.parametrize("pattern,wildcards,name,ok", WILDCARD_CASES)
def test_wildcards_only_where_a_provisioner_allows_them(pattern: str, wildcards: bool, name: str, ok: bool) -> None:
    policy = Policy(provisioner="p", allow=parse_patterns([pattern]), wildcards=wildcards)
    request = IssuanceRequest(names=(parse_name(name),), key_type=KeyType.EC_P256, key_description="ec-p256",
                              asks_for_ca=False, ttl=None, now=NOW, issuer_not_after=NOW + timedelta(days=30))
    if ok:
        assert policy.decide(request).names == request.names
        return
    with pytest.raises(PolicyDenied) as info:
        policy.decide(request)
    assert info.value.rule == "names_allowed" and info.value.value == name


@pytest.mark.parametrize("bad", ["*.*.", "=", "=*.*.x.internal", "*.*.*.x.internal", "=a..b"])
def test_bad_wildcard_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        NamePattern.parse(bad)


def test_wildcard_patterns_constrain_the_intermediate_to_their_zone() -> None:
    ext = name_limits(parse_patterns(["*.*.prod.internal", "=*.dev.internal"])).extension()
    assert ext is not None
    assert {n.value for n in ext.permitted_subtrees if isinstance(n, x509.DNSName)} == {"prod.internal",
                                                                                         "dev.internal"}


def test_provisioner_wildcards_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trustyard.ca.config import ProvisionerConfig
    from trustyard.errors import ConfigError

    assert ProvisionerConfig(name="p").policy("1m").wildcards is False
    policy = ProvisionerConfig(name="p", allow=("*.prod.internal",), wildcards=True).policy("1m")
    policy.check_names([parse_name("*.orders.prod.internal")])
    with pytest.raises(PolicyDenied):
        policy.check_names([parse_name("*.prod.internal")])
    with pytest.raises(ConfigError, match="wildcards"):
        ProvisionerConfig(name="p", wildcards="yes").policy("1m")  # type: ignore[arg-type]
