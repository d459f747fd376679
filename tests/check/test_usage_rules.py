"""The one verifier applies the rules of the usage at hand, backtracks over alternate
issuers and answers malformed certificates with its designed error."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustyard import check
from trustyard.diagnose.doctor import classify_chain
from trustyard.x509.verify import ChainRejected, verify

from .conftest import NOW

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _cert(subject: str, key: Key, issuer: x509.Certificate | None, issuer_key: Key, *, ca: bool, eku: list[x509.ObjectIdentifier] | None = None,
          san: str | None = None, days: int = 3650, extra: list[x509.ExtensionType] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    start = NOW - dt.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                      crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             (issuer_key if issuer else key).public_key()), critical=False))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    for ext in extra:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def public_style() -> dict:
    """Root -> intermediate limited to serverAuth (as public issuing CAs are) -> leaves."""
    rk, ik = _key(), _key()
    root = _cert("Public Root", rk, None, rk, ca=True)
    inter = _cert("Public Issuing CA", ik, root, rk, ca=True, eku=[SERVER])
    keys = {u: _key() for u in ("server", "client")}
    return {
        "root": root, "inter": inter, "rk": rk, "ik": ik,
        "server": (_cert("www.example.com", keys["server"], inter, ik, ca=False, eku=[SERVER],
                         san="www.example.com"), keys["server"]),
        "client": (_cert("www.example.com", keys["client"], inter, ik, ca=False, eku=[CLIENT],
                         san="www.example.com"), keys["client"]),
    }


def test_server_chain_with_a_serverauth_only_intermediate_is_accepted(public_style: dict) -> None:
    leaf, key = public_style["server"]
    report = check.validate([leaf, public_style["inter"]], key, [public_style["root"]],
                            name="www.example.com", usage="server", now=NOW)
    assert report.ok and report.checks["chain"] == "ok (cryptography)"


def test_client_only_leaf_is_refused_as_a_server(public_style: dict) -> None:
    leaf, key = public_style["client"]
    with pytest.raises(check.WrongUsage, match="serverAuth"):
        check.validate([leaf, public_style["inter"]], key, [public_style["root"]], usage="server", now=NOW)
    result = verify(leaf, [public_style["inter"]], [public_style["root"]], usage="server", at=NOW)
    assert (result.layer, result.code) == ("trust", "wrong_usage")


def test_serverauth_only_intermediate_cannot_vouch_for_a_client(public_style: dict) -> None:
    leaf, key = public_style["client"]
    with pytest.raises(check.ChainInvalid, match="clientAuth"):
        check.validate([leaf, public_style["inter"]], key, [public_style["root"]], usage="client", now=NOW)


def test_backtracks_over_an_issuer_with_the_same_name(public_style: dict) -> None:
    """Two intermediates with one subject and key: the first leads to an untrusted root,
    the second (cross-signed) to the trusted one. The first dead end must not decide."""
    stray_key = _key()
    stray_root = _cert("Stray Root", stray_key, None, stray_key, ca=True)
    ik = public_style["ik"]
    dead_end = _cert("Public Issuing CA", ik, stray_root, stray_key, ca=True, eku=[SERVER])
    leaf, key = public_style["server"]
    report = check.validate([leaf, dead_end, public_style["inter"]], key, [public_style["root"]],
                            name="www.example.com", now=NOW)
    assert report.ok
    assert report.chain[-1] == "CN=Public Root"


def test_malformed_certificate_is_a_designed_error(public_style: dict) -> None:
    ik = public_style["ik"]
    broken_san = x509.UnrecognizedExtension(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x05x")
    k = _key()
    leaf = _cert("broken", k, public_style["inter"], ik, ca=False, eku=[SERVER], extra=[broken_san])
    result = verify(leaf, [public_style["inter"]], [public_style["root"]], usage="server", at=NOW)
    assert (result.layer, result.code) == ("trust", "malformed_certificate")
    with pytest.raises(ChainRejected) as raised:
        result.require()
    assert raised.value.code == "malformed_certificate"
    verdict = classify_chain([leaf, public_style["inter"]], [public_style["root"]], name="broken", now=NOW)
    assert verdict is not None and (verdict.layer, verdict.code) == ("trust", "malformed_certificate")
    with pytest.raises(check.CheckFailed):
        check.validate([leaf, public_style["inter"]], k, [public_style["root"]], now=NOW)


@pytest.mark.parametrize("usage, ok", [("server", True), ("client", False)])
def test_ed25519_chains_get_the_same_usage_rules(usage: str, ok: bool) -> None:
    """cryptography refuses Ed25519; the fallback applies the CA EKU rule of the usage all the same."""
    rk, ik, lk = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    root = _cert("Ed Root", rk, None, rk, ca=True)
    inter = _cert("Ed Issuing CA", ik, root, rk, ca=True, eku=[SERVER])
    leaf = _cert("svc.example.com", lk, inter, ik, ca=False, eku=[SERVER, CLIENT], san="svc.example.com")
    result = verify(leaf, [inter], [root], usage=usage, at=NOW)  # type: ignore[arg-type]
    assert result.method == "trustyard fallback (Ed25519)"
    assert result.ok is ok
    if not ok:
        assert (result.layer, result.code) == ("trust", "invalid_chain") and "clientAuth" in result.detail
