"""The certificate profile, linted with pkilint and verified by openssl."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from trustyard.ca.authority import Authority
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.units import parse_duration
from trustyard.x509.keys import KeyType, generate_private_key

from .support import PASSWORD, csr_pem


def lint_pkix(cert: x509.Certificate) -> list[str]:
    """pkilint's lint_pkix_cert validator set; returns the ERROR/FATAL findings."""
    from pkilint import loader
    from pkilint.pkix import certificate, extension, name

    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [certificate.create_issuer_validator_container([]), certificate.create_validity_validator_container(),
         certificate.create_subject_validator_container([]), certificate.create_extensions_validator_container([]),
         certificate.create_spki_validator_container([])],
    )
    doc = loader.load_der_certificate(cert.public_bytes(Encoding.DER), "cert")
    results = validator.validate(doc.root)
    findings = []
    for result in results:
        for finding in result.finding_descriptions:
            if finding.finding.severity.name in ("ERROR", "FATAL"):
                findings.append(f"{result.node.path}: {finding.finding.code}: {finding.message}")
    return findings


def issue(authority: Authority, names: list[x509.GeneralName], key_type: KeyType,
          ttl: str | None = None) -> x509.Certificate:
    key = generate_private_key(key_type)
    texts = [str(n.value) for n in names]
    token = authority.mint_token("default", texts[0], texts)
    return authority.issue_for_token(csr_pem(key, names), token, parse_duration(ttl) if ttl else None).certificate


NAMES = [x509.DNSName("orders.prod.internal"), x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
         x509.UniformResourceIdentifier("spiffe://prod.internal/ns/prod/sa/orders")]


@pytest.fixture(scope="module", params=[k.value for k in KeyType])
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("profile") / "ca"
    init_home(home, PASSWORD, InitOptions(key_type=KeyType(request.param),
                                          allow=("*.prod.internal", "10.0.0.0/8", "spiffe://prod.internal/*",
                                                 "https://prod.internal/*")))
    authority = load_authority(home, PASSWORD, minting=True)
    yield home, authority
    authority.store.close()


@pytest.mark.parametrize("leaf_type", [k.value for k in KeyType])
def test_every_profile_lints_clean_and_openssl_verifies(ca, leaf_type: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home, authority = ca
    root = x509.load_pem_x509_certificate((home / "ca/root.crt").read_bytes())
    inter = authority.signer.certificate
    server = x509.load_pem_x509_certificate((home / "server/tls.crt").read_bytes())
    leaf = issue(authority, NAMES, KeyType(leaf_type))
    https_uri_leaf = issue(authority, [x509.DNSName("web.prod.internal"),
                                       x509.UniformResourceIdentifier("https://prod.internal/orders")],
                           KeyType(leaf_type))
    for cert in (root, inter, https_uri_leaf):
        assert lint_pkix(cert) == [], cert.subject
    # pkilint checks URI syntax with `validators.url`, which knows only web schemes and so rejects
    # every spiffe:// URI (valid RFC 3986). That one finding is expected on the SPIFFE leaf.
    assert [f for f in lint_pkix(leaf) if "spiffe://" not in f] == []
    # The CA server's own certificate must cover "localhost". pkilint checks dNSName with
    # the `validators.domain` package, which demands a TLD; RFC 1034 preferred syntax (what RFC 5280
    # asks for) allows a single label. That one finding is expected; nothing else may appear.
    assert [f for f in lint_pkix(server) if '"localhost"' not in f] == []
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(inter.public_bytes(Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                             str(tmp_path / "chain.pem"), str(tmp_path / "leaf.pem")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_leaf_profile_fields(sqlite_home: Path) -> None:
    authority = load_authority(sqlite_home, PASSWORD, minting=True)
    for key_type in (KeyType.EC_P256, KeyType.RSA_2048):
        before = datetime.now(UTC)
        leaf = issue(authority, [x509.DNSName("a.internal"),
                                 x509.UniformResourceIdentifier("spiffe://prod.internal/a")], key_type, "1h")
        # serial: positive, >= 64 bits of entropy, <= 20 octets
        assert 0 < leaf.serial_number < 2**159
        assert leaf.serial_number.bit_length() > 64
        ext = leaf.extensions
        bc = ext.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca is False
        ku = ext.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature
        assert ku.value.key_encipherment is (key_type is KeyType.RSA_2048)
        assert not ku.value.key_cert_sign
        eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://prod.internal/a"]
        aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = authority.signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        # backdated by the configured 1 minute for clock skew, 1h lifetime from now
        assert before - timedelta(minutes=1, seconds=5) <= leaf.not_valid_before_utc <= before - timedelta(seconds=55)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert timedelta(minutes=60) < lifetime <= timedelta(minutes=61, seconds=1)
    authority.store.close()


def test_serials_are_unique_and_random(sqlite_home: Path) -> None:
    from trustyard.x509.profiles import new_serial

    serials = {new_serial() for _ in range(10000)}
    assert len(serials) == 10000
    assert all(0 < s < 2**159 for s in serials)
    assert max(s.bit_length() for s in serials) > 150


def test_backdate_is_configurable(tmp_path: Path) -> None:
    import tomllib

    import tomli_w

    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions())
    config = tomllib.loads((home / "trustyard.toml").read_text())
    config["ca"]["backdate"] = "10m"
    (home / "trustyard.toml").write_text(tomli_w.dumps(config))
    authority = load_authority(home, PASSWORD, minting=True)
    before = datetime.now(UTC)
    leaf = issue(authority, [x509.DNSName("a.internal")], KeyType.EC_P256)
    assert before - timedelta(minutes=10, seconds=5) <= leaf.not_valid_before_utc <= before - timedelta(minutes=9)
    authority.store.close()


def test_eku_is_configurable(tmp_path: Path) -> None:
    import tomllib

    import tomli_w

    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions())
    config = tomllib.loads((home / "trustyard.toml").read_text())
    config["provisioners"][0]["eku"] = ["clientAuth"]
    (home / "trustyard.toml").write_text(tomli_w.dumps(config))
    authority = load_authority(home, PASSWORD, minting=True)
    leaf = issue(authority, [x509.DNSName("client.internal")], KeyType.EC_P256)
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    authority.store.close()
