"""Cheap refusals come before expensive operations.

A renewal (or revocation) proof's certificate is looked up in the ledger before any signature
is verified, and a key outside the allowed types and sizes (RSA-8192/16384, P-521) is refused
before the CSR's self-signature is checked. Each hostile input here carries a signature that
does not verify, so the answer shows which check ran first; the proof tests also count the
public-key verifications PyJWT performs.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import jwt.algorithms
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from trustyard.ca import proofs
from trustyard.ca.authority import Authority
from trustyard.x509.csr import CSRError, parse_csr
from trustyard.x509.keys import KeyType, generate_private_key
from trustyard.x509.profiles import LeafSpec, leaf_builder, new_serial, root_builder
from trustyard.x509.profiles import sign as sign_cert

from .support import csr_pem


@pytest.fixture
def ca_home(sqlite_home: Path) -> Path:
    """These tests run on SQLite only: conftest's authority, client and admin use this home."""
    return sqlite_home


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every public-key signature check PyJWT makes (proofs and tokens go through it)."""
    calls: list[str] = []
    for cls in (jwt.algorithms.RSAAlgorithm, jwt.algorithms.ECAlgorithm, jwt.algorithms.OKPAlgorithm):
        original: Callable[..., bool] = cls.verify

        def counting(self: Any, msg: bytes, key: Any, sig: bytes, _original: Callable[..., bool] = original,
                     _name: str = cls.__name__) -> bool:
            calls.append(_name)
            return _original(self, msg, key, sig)

        monkeypatch.setattr(cls, "verify", counting)
    return calls


# -- hostile material, cheap to make ----------------------------------------------------------------

def fake_rsa_key(bits: int) -> rsa.RSAPublicKey:
    """An RSA public key of ``bits`` bits nobody holds the private half of (no primes generated)."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(65537, n).public_key()


def foreign_certificate(public_key: Any) -> x509.Certificate:
    """A leaf for orders.internal from a CA this trustyard never heard of."""
    key = generate_private_key(KeyType.EC_P256)
    now = datetime.now(UTC)
    root = sign_cert(root_builder(key.public_key(), "other", now, timedelta(days=1)), key)
    return sign_cert(leaf_builder(LeafSpec(public_key, (x509.DNSName("orders.internal"),), now,
                                           now + timedelta(hours=1), new_serial()), root), key)


def unsigned_proof(cert: x509.Certificate, audience: str, alg: str, **claims: Any) -> str:
    """A proof-shaped JWT for ``cert`` whose signature is random bytes."""
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    now = int(datetime.now(UTC).timestamp())
    header = {"alg": alg, "typ": "JWT", "x5c": [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]}
    body = {"aud": audience, "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16), **claims}
    signature = secrets.token_bytes(cert.public_key().key_size // 8)  # type: ignore[union-attr]
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(body).encode()), b64(signature)])


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``at``."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(data[at:at + count], "big"), at + count
    return tag, at, at + length


def _children(data: bytes) -> list[bytes]:
    _tag, at, end = _tlv(data, 0)
    out = []
    while at < end:
        _t, _start, stop = _tlv(data, at)
        out.append(data[at:stop])
        at = stop
    return out


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")


def csr_with_foreign_key(public_key: rsa.RSAPublicKey, *names: str) -> bytes:
    """A CSR carrying ``public_key`` (whose private half nobody has) and a random RSA signature."""
    template = x509.load_pem_x509_csr(csr_pem(generate_private_key(KeyType.EC_P256),
                                               [x509.DNSName(n) for n in names]))
    info, _alg, _sig = _children(template.public_bytes(Encoding.DER))
    version, subject, _spki, attributes = _children(info)
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    info = _der(0x30, version + subject + spki + attributes)
    signature = _der(0x03, b"\x00" + secrets.token_bytes(public_key.key_size // 8))
    return _der(0x30, info + SHA256_WITH_RSA + signature)


def p521_csr_with_broken_signature(*names: str) -> bytes:
    key = ec.generate_private_key(ec.SECP521R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    from cryptography.hazmat.primitives import hashes

    der = bytearray(builder.sign(key, hashes.SHA512()).public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s: still DER, no longer valid
    return bytes(der)


def pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE REQUEST-----\n"


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    doc = response.json()
    assert doc["type"] == f"urn:trustyard:error:{code}", doc
    return doc


# -- the renewal proof: ledger first ----------------------------------------------------------------

@pytest.mark.parametrize("key_maker", [lambda: generate_private_key(KeyType.EC_P256).public_key(),
                                       lambda: fake_rsa_key(16384)], ids=["ec-p256", "rsa-16384"])
def test_renewal_proof_for_unknown_certificate_verifies_no_signature(
        client: TestClient, authority: Authority, verifications: list[str], key_maker: Callable[[], Any]) -> None:
    cert = foreign_certificate(key_maker())
    alg = "RS256" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "ES256"
    csr = csr_pem(generate_private_key(KeyType.EC_P256), [])
    proof = unsigned_proof(cert, proofs.RENEW, alg, csr_sha256=proofs.csr_digest(
        x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)))
    before = authority.store.counts()
    problem(client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof}), 401, "unknownCertificate")
    assert verifications == []  # main verified the proof first: one RSA/EC verification, then badProof
    assert authority.store.counts() == before


def test_revocation_proof_for_unknown_certificate_verifies_no_signature(
        client: TestClient, verifications: list[str]) -> None:
    cert = foreign_certificate(fake_rsa_key(16384))
    serial = format(cert.serial_number, "x")
    proof = unsigned_proof(cert, proofs.REVOKE, "RS256", serial=serial)
    problem(client.post("/v1/revoke", json={"serial": serial, "proof": proof}), 401, "unknownCertificate")
    assert verifications == []


def test_a_known_certificate_still_needs_a_good_signature(client: TestClient, authority: Authority,
                                                          verifications: list[str]) -> None:
    key = generate_private_key(KeyType.EC_P256)
    token = authority.mint_token("default", "orders.internal", [])
    csr = csr_pem(key, [x509.DNSName("orders.internal")])
    first = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert first.status_code == 201, first.text
    cert = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    new_csr = csr_pem(generate_private_key(KeyType.EC_P256), [])
    digest = proofs.csr_digest(x509.load_pem_x509_csr(new_csr).public_bytes(Encoding.DER))
    verifications.clear()
    forged = unsigned_proof(cert, proofs.RENEW, "ES256", csr_sha256=digest)
    problem(client.post("/v1/renew", json={"csr": new_csr.decode(), "proof": forged}), 401, "badProof")
    assert verifications == ["ECAlgorithm"]  # the ledger knew it, so its signature was checked, once
    good = proofs.make(key, [cert], proofs.RENEW, csr_sha256=digest)
    assert client.post("/v1/renew", json={"csr": new_csr.decode(), "proof": good}).status_code == 201


# -- CSR keys: the type and size before the signature -----------------------------------------------

@pytest.mark.parametrize("make_csr, described", [
    (lambda: csr_with_foreign_key(fake_rsa_key(8192), "a.internal"), "rsa-8192"),
    (lambda: csr_with_foreign_key(fake_rsa_key(16384), "a.internal"), "rsa-16384"),
    (lambda: p521_csr_with_broken_signature("a.internal"), "ec-secp521r1"),
], ids=["rsa-8192", "rsa-16384", "p521"])
def test_sign_refuses_a_disallowed_key_before_checking_the_csr_signature(
        client: TestClient, authority: Authority, make_csr: Callable[[], bytes], described: str) -> None:
    token = authority.mint_token("default", "a.internal", [])
    before = authority.store.counts()
    response = client.post("/v1/sign", json={"csr": pem(make_csr()), "token": token})
    # main checked the signature first and answered 400 badSignature
    doc = problem(response, 403, "policyDenied")
    assert doc["rule"] == "key_type_allowed" and doc["value"] == described
    assert authority.store.counts() == before


def test_renew_refuses_a_disallowed_key_before_checking_the_csr_signature(
        client: TestClient, authority: Authority) -> None:
    key = generate_private_key(KeyType.EC_P256)
    token = authority.mint_token("default", "orders.internal", [])
    first = client.post("/v1/sign", json={"csr": csr_pem(key, [x509.DNSName("orders.internal")]).decode(),
                                          "token": token})
    cert = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    hostile = csr_with_foreign_key(fake_rsa_key(16384))
    proof = proofs.make(key, [cert], proofs.RENEW, csr_sha256=proofs.csr_digest(hostile))
    doc = problem(client.post("/v1/renew", json={"csr": pem(hostile), "proof": proof}), 403, "policyDenied")
    assert doc["rule"] == "key_type_allowed" and doc["value"] == "rsa-16384"


@pytest.mark.parametrize("make_csr", [lambda: csr_with_foreign_key(fake_rsa_key(16384), "a.internal"),
                                      lambda: p521_csr_with_broken_signature("a.internal")], ids=["rsa-16384", "p521"])
def test_parse_csr_without_a_policy_still_refuses_unsupported_keys_first(make_csr: Callable[[], bytes]) -> None:
    """The ACME finalize path parses the CSR before it knows the provisioner's rules."""
    with pytest.raises(CSRError) as info:
        parse_csr(make_csr())
    assert info.value.code == "unsupportedKey"
