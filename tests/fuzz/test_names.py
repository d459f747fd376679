"""Names and name patterns (``x509.names``, ``policy.patterns``).

``parse_name``, ``normalize_dns`` and ``NamePattern.parse`` take what people type into
``--allow``, ``trustyard token`` and the config: they return a typed value or raise
``ValueError`` with the reason. What they accept must then work everywhere downstream:
matching never raises, and the name constraints derived from accepted patterns can be put
into a real intermediate certificate.

``test_uri_pattern_matches_only_normalized_spiffe_ids`` states that SPIFFE IDs are matched
exactly, as a property.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.errors import PolicyDenied
from trustyard.policy import Policy, parse_patterns
from trustyard.policy.patterns import NamePattern, name_limits
from trustyard.x509.keys import KeyType, generate_private_key, signature_hash
from trustyard.x509.names import name_text, normalize_dns, parse_name, reads_as_ip
from trustyard.x509.profiles import intermediate_builder

from .strategies import budget

ISSUER_KEY = generate_private_key(KeyType.EC_P256)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ISSUER = (x509.CertificateBuilder()
          .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fuzz root")]))
          .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fuzz root")]))
          .public_key(ISSUER_KEY.public_key()).serial_number(1)
          .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ISSUER_KEY, signature_hash(ISSUER_KEY)))  # type: ignore[arg-type]

_LABEL_CHARS = "abcxyz019-_*.%/:@?#[]\\ \t\x00éЖ"
labels = st.text(_LABEL_CHARS, min_size=0, max_size=12)
dns_like = st.builds(lambda parts, dot: ".".join(parts) + dot, st.lists(labels, min_size=1, max_size=5),
                     st.sampled_from(["", ".", ".."]))
ip_like = st.one_of(st.ip_addresses().map(str), st.ip_addresses().map(lambda a: f"[{a}]"),
                    st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(), st.integers(-1, 200)))
_SEGMENTS = st.sampled_from(["billing", "", ".", "..", "%2e", "%2E%2e", "%2f", "a b", "x?y=1", "x#f", "é", "*",
                             "BILLING", "billing;v=1", "\\", "%00"])
uri_like = st.builds(
    lambda scheme, userinfo, host, port, segments, tail: f"{scheme}://{userinfo}{host}{port}/{'/'.join(segments)}{tail}",
    st.sampled_from(["spiffe", "SPIFFE", "https", "spiffe+x", "1x", ""]),
    st.sampled_from(["", "user@", "a:b@"]),
    st.sampled_from(["prod.internal", "PROD.internal", "prod.internal.", "*.internal", "", "[::1]", "é.internal"]),
    st.sampled_from(["", ":443", ":", ":x"]),
    st.lists(_SEGMENTS, max_size=4),
    st.sampled_from(["", "*", "?q", "#f", "/", "/*"]),
)
name_texts = st.one_of(dns_like, ip_like, uri_like, st.text(max_size=40))


@budget(400)
@given(name_texts)
@example("0.0.0.0.")
def test_parse_name_returns_a_name_or_raises_value_error(text: str) -> None:
    try:
        name = parse_name(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(name, (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier))
    if isinstance(name, x509.DNSName) and reads_as_ip(name.value):  # "10.0.0.1." or "0x7f.1"
        with pytest.raises(PolicyDenied):  # a DNS name that reads as an address is never issued
            Policy(provisioner="any", allow=parse_patterns(["*"])).check_names([name])
        return
    assert parse_name(name_text(name)) == name  # the string form reads back as the same name


@budget(300)
@given(dns_like)
def test_normalize_dns_is_idempotent_or_raises_value_error(text: str) -> None:
    try:
        name = normalize_dns(text)
    except ValueError:
        return
    assert name == normalize_dns(name)
    assert name.isascii() and len(name) <= 253


def _intermediate_with(patterns: list[NamePattern]) -> x509.Certificate:
    builder = intermediate_builder(generate_private_key(KeyType.EC_P256).public_key(), ISSUER, "fuzz intermediate",
                                   NOW, timedelta(hours=1), name_limits(patterns))
    return builder.sign(ISSUER_KEY, signature_hash(ISSUER_KEY))  # type: ignore[arg-type]


def check_patterns(texts: list[str], candidates: list[str]) -> None:
    """An accepted pattern list matches any name without raising, and its name constraints
    go into a real intermediate certificate (``trustyard init`` makes one from ``--allow``)."""
    patterns = []
    for text in texts:
        try:
            patterns.append(NamePattern.parse(text))
        except ValueError as exc:
            assert str(exc)
    names = []
    for text in candidates:
        with contextlib.suppress(ValueError):
            names.append(parse_name(text))
    names += [x509.RFC822Name("a@b.internal"), x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]
    for pattern in patterns:
        for name in names:
            assert pattern.matches(name) in (True, False)  # type: ignore[arg-type]
    if patterns:
        try:
            _intermediate_with(patterns)
        except ValueError as exc:  # a pattern the CA cannot express must be refused when parsed, not here
            raise AssertionError(f"patterns {texts!r} parse but cannot constrain an intermediate: {exc}") from None


not_uri = st.one_of(dns_like, ip_like, st.text(max_size=40)).filter(lambda t: "://" not in t)


@budget(150)
@given(st.lists(not_uri, min_size=1, max_size=4), st.lists(name_texts, max_size=6))
def test_dns_and_ip_patterns_parse_match_and_constrain(texts: list[str], candidates: list[str]) -> None:
    check_patterns(texts, candidates)


@budget(120)
@given(st.lists(st.one_of(uri_like, not_uri), min_size=1, max_size=3), st.lists(name_texts, max_size=6))
@example(["spiffe://é.internal/*"], ["spiffe://é.internal/x"])
@example(["spiffe://prod internal/*"], [])
@example(["spiffe://[::1]/*"], ["spiffe://[::1]/x"])
def test_uri_patterns_parse_match_and_constrain(texts: list[str], candidates: list[str]) -> None:
    """URI patterns: ``--allow 'spiffe://é.internal/*'`` once parsed, then ``trustyard init``
    died with a traceback building the intermediate's name constraints."""
    check_patterns(texts, candidates)


# -- SPIFFE IDs are exact -----------------------------------------------------------

_SPIFFE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def is_normalized_spiffe_id(uri: str) -> bool:
    """The SPIFFE ID rules: lower-case trust domain, non-empty segments of [A-Za-z0-9._-] that are
    not ``.`` or ``..``; no percent-encoding, query, fragment, port or userinfo."""
    if not uri.startswith("spiffe://") or any(c in uri for c in "?#%@\\"):
        return False
    parts = urlsplit(uri)
    if parts.port is not None or ":" in parts.netloc or not re.fullmatch(r"[a-z0-9._-]+", parts.netloc or ""):
        return False
    if parts.path in ("", "/"):
        return True
    segments = parts.path[1:].split("/")
    return all(_SPIFFE_SEGMENT.match(s) and s not in (".", "..") for s in segments)


@budget(200)
@given(uri_like.filter(lambda u: u.startswith("spiffe://prod.internal/")))
@example("spiffe://prod.internal/billing/../admin")
@example("spiffe://prod.internal/billing/%2e%2e/admin")
@example("spiffe://prod.internal/billing//x")
@example("spiffe://prod.internal/billing/x?y=1")
@example("spiffe://prod.internal/billing/x#frag")
def test_uri_pattern_matches_only_normalized_spiffe_ids(uri: str) -> None:
    """``spiffe://prod.internal/billing/*`` matches only normalized IDs below billing."""
    pattern = NamePattern.parse("spiffe://prod.internal/billing/*")
    # unvalidated, as a CSR or a peer certificate can carry it
    if pattern.matches(x509.UniformResourceIdentifier._init_without_validation(uri)):
        assert is_normalized_spiffe_id(uri), f"{uri!r} is not a normalized SPIFFE ID but matches {pattern}"
