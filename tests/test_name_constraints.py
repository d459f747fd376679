"""The intermediate's name constraints cover every name type the policy
allows and shut every type it does not (DNS, IP, URI, email), judged by the real
``openssl verify`` on leaves the intermediate signs outside the policy (as a compromised
or buggy issuer would)."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustyard.ca.home import InitOptions, init_home
from trustyard.policy import NamePattern, parse_patterns
from trustyard.policy.patterns import name_limits
from trustyard.x509.keys import KeyType, generate_private_key, load_private_key_pem
from trustyard.x509.profiles import LeafSpec, intermediate_builder, leaf_builder, new_serial, root_builder, sign
from trustyard.x509.verify import verify


def _name(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":") if text.startswith(("ip:", "email:", "uri:")) else ("dns", "", text)
    if kind == "ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    return x509.DNSName(value)


def make_leaf(inter: x509.Certificate, inter_key: object, names: list[str]) -> x509.Certificate:
    now = datetime.now(UTC) - timedelta(minutes=1)
    key = generate_private_key(KeyType.EC_P256)
    spec = LeafSpec(public_key=key.public_key(), names=tuple(_name(n) for n in names),  # type: ignore[arg-type]
                    not_before=now, not_after=now + timedelta(hours=1), serial=new_serial())
    return sign(leaf_builder(spec, inter), inter_key)  # type: ignore[arg-type]


def openssl_verify(tmp: Path, root: x509.Certificate, inter: x509.Certificate, inter_key: object,
                   names: list[str]) -> subprocess.CompletedProcess[str]:
    leaf = make_leaf(inter, inter_key, names)
    for file, cert in (("root.pem", root), ("inter.pem", inter), ("leaf.pem", leaf)):
        (tmp / file).write_bytes(cert.public_bytes(Encoding.PEM))
    return subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "root.pem"), "-untrusted",
                           str(tmp / "inter.pem"), str(tmp / "leaf.pem")], capture_output=True, text=True, timeout=30)


# allow patterns -> (leaf names that verify, leaf names the constraints must refuse)
CASES = {
    "dns-only": (["*.prod.internal"],
                 [["a.prod.internal"]],
                 [["10.0.0.1"], ["uri:spiffe://prod.internal/x"], ["a.prod.internal", "email:ops@prod.internal"],
                  ["a.prod.internal", "uri:https://a.prod.internal/"], ["example.com"]]),
    "ip-only": (["10.0.0.0/8"],
                [["ip:10.1.2.3"]],
                [["a.prod.internal"], ["ip:10.1.2.3", "localhost"], ["ip:192.168.1.1"],
                 ["ip:10.1.2.3", "uri:spiffe://x.internal/a"]]),
    "any-dns": (["*", "10.0.0.0/8"],
                [["anything.example", "ip:10.0.0.9"]],
                [["anything.example", "ip:192.168.1.1"], ["ip:::1"], ["a.example", "email:a@a.example"],
                 ["a.example", "uri:spiffe://a.example/x"]]),
    "any-uri-host": (["*.internal", "spiffe://*"],
                     [["a.internal", "uri:spiffe://anywhere.example/x"]],
                     [["a.internal", "ip:10.0.0.1"], ["example.com"]]),
    "default": (["*.internal", "spiffe://trustyard.internal/*"],
                [["a.internal", "uri:spiffe://trustyard.internal/ns/a"]],
                [["a.internal", "uri:spiffe://evil.example/ns/a"], ["a.internal", "ip:127.0.0.1"],
                 ["a.internal", "email:root@a.internal"]]),
}


def init_ca(home: Path, allow: list[str]) -> tuple[x509.Certificate, x509.Certificate, object]:
    """``trustyard init`` with these allow patterns: its root, intermediate and intermediate key."""
    init_home(home, None, InitOptions(allow=tuple(allow)))
    root = x509.load_pem_x509_certificate((home / "ca/root.crt").read_bytes())
    inter = x509.load_pem_x509_certificate((home / "ca/intermediate.crt").read_bytes())
    return root, inter, load_private_key_pem((home / "ca/intermediate.key").read_bytes())


@pytest.mark.parametrize("case", sorted(CASES))
def test_init_constrains_every_name_type(tmp_path: Path, case: str) -> None:
    """Through ``trustyard init``: the intermediate it makes, signing leaves outside the policy."""
    allow, good, bad = CASES[case]
    root, inter, inter_key = init_ca(tmp_path / "ca", allow)
    assert inter.extensions.get_extension_for_class(x509.NameConstraints).critical
    for names in good:
        done = openssl_verify(tmp_path, root, inter, inter_key, names)
        assert done.returncode == 0, (names, done.stdout + done.stderr)
    for names in bad:
        done = openssl_verify(tmp_path, root, inter, inter_key, names)
        assert done.returncode != 0 and "subtree violation" in done.stdout + done.stderr, \
            (names, done.stdout + done.stderr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_chain_verifier_agrees_with_openssl_on_every_name_type(tmp_path: Path, case: str) -> None:
    """``check``/``doctor``'s verifier judges trustyard's own chains as OpenSSL does: a SPIFFE
    leaf below the URI-constrained intermediate is good (cryptography alone cannot say: it
    refuses URI constraints), a name outside any constraint is refused."""
    allow, good, bad = CASES[case]
    root, inter, inter_key = init_ca(tmp_path / "ca", allow)
    for names in good:
        result = verify(make_leaf(inter, inter_key, names), [inter], [root], usage="server")
        assert result.ok, (names, result.detail)
    for names in bad:
        result = verify(make_leaf(inter, inter_key, names), [inter], [root], usage="server")
        assert not result.ok and result.code == "invalid_chain", names


def test_a_uri_pattern_with_a_wildcard_host_is_constrained_by_its_fixed_suffix(tmp_path: Path) -> None:
    patterns = (*parse_patterns(["*.internal"]), NamePattern("uri", "spiffe://*.internal/*"))
    limits = name_limits(patterns)
    ext = limits.extension()
    assert ext is not None and x509.UniformResourceIdentifier(".internal") in ext.permitted_subtrees
    now = datetime.now(UTC) - timedelta(minutes=1)
    root_key, inter_key = generate_private_key(KeyType.EC_P256), generate_private_key(KeyType.EC_P256)
    root = sign(root_builder(root_key.public_key(), "t Root", now, timedelta(days=2)), root_key)  # type: ignore[arg-type]
    inter = sign(intermediate_builder(inter_key.public_key(), root, "t Inter", now, timedelta(days=1),  # type: ignore[arg-type]
                                      limits=limits), root_key)
    assert openssl_verify(tmp_path, root, inter, inter_key, ["a.internal", "uri:spiffe://b.internal/x"]).returncode == 0
    for names in (["a.internal", "uri:spiffe://b.example/x"], ["a.internal", "ip:10.0.0.1"],
                  ["a.internal", "email:a@b.internal"]):
        done = openssl_verify(tmp_path, root, inter, inter_key, names)
        assert done.returncode != 0 and "subtree violation" in done.stdout + done.stderr, names


@pytest.mark.parametrize("texts,open_type", [(["*.internal", "spiffe://*"], "URI"),
                                             (["*", "spiffe://prod.internal/*"], "DNS")])
def test_a_pattern_that_cannot_be_constrained_opens_only_its_own_type(texts: list[str], open_type: str) -> None:
    ext = name_limits(parse_patterns(texts)).extension()
    assert ext is not None
    kinds = {type(n).__name__ for n in ext.permitted_subtrees}
    assert "RFC822Name" in kinds and x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")) in ext.excluded_subtrees
    assert ("UniformResourceIdentifier" in kinds) == (open_type != "URI")
    assert ("DNSName" in kinds) == (open_type != "DNS")
