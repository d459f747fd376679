"""Items 3, 4, 5, 10: the REST API on SQLite and on PostgreSQL (each test runs on both)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.testclient import TestClient

from trustyard.ca import proofs
from trustyard.ca.authority import Authority
from trustyard.x509.keys import KeyType, generate_private_key

from .support import csr_pem, new_csr


def ledger(authority: Authority) -> list[tuple[str, str]]:
    return [(r.serial, r.status) for r in authority.store.list(limit=10000)]


def sign(client: TestClient, authority: Authority, *names: str, key_type: KeyType = KeyType.EC_P256, **body):  # type: ignore[no-untyped-def]
    key, csr = new_csr(*names, key_type=key_type)
    token = authority.mint_token("default", names[0], list(names))
    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token, **body})
    return key, response


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["type"] == f"urn:trustyard:error:{code}", doc
    assert doc["status"] == status and doc["detail"]
    return doc


def test_sign_returns_leaf_chain_and_bundle(client: TestClient, authority: Authority) -> None:
    _key, response = sign(client, authority, "orders.internal")
    assert response.status_code == 201, response.text
    doc = response.json()
    leaf = x509.load_pem_x509_certificate(doc["certificate"].encode())
    chain = x509.load_pem_x509_certificates(doc["chain"].encode())
    roots = x509.load_pem_x509_certificates(doc["roots"].encode())
    assert format(leaf.serial_number, "x") == doc["serial"]
    leaf.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(roots[0])
    # stored byte-identical before it was returned
    record = authority.store.get(doc["serial"])
    assert record is not None and record.status == "issued"
    assert record.der == leaf.public_bytes(Encoding.DER)


def test_roots_with_etag(client: TestClient, ca_home: Path) -> None:
    response = client.get("/v1/roots")
    assert response.status_code == 200
    assert response.text == (ca_home / "ca/roots.pem").read_text()
    etag = response.headers["etag"]
    assert client.get("/v1/roots", headers={"If-None-Match": etag}).status_code == 304


# -- bootstrap tokens ----------------------------------------------------------------------------

def test_replayed_token_is_refused_and_nothing_issued(client: TestClient, authority: Authority) -> None:
    _key, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", [])
    assert client.post("/v1/sign", json={"csr": csr.decode(), "token": token}).status_code == 201
    before = ledger(authority)
    _other_key, other = new_csr("orders.internal")  # the same CSR key would be a retry (test_redemption_retry)
    assert_problem(client.post("/v1/sign", json={"csr": other.decode(), "token": token}), 401, "tokenReplayed")
    assert ledger(authority) == before


def test_expired_token_is_refused(client: TestClient, authority: Authority) -> None:
    from trustyard.ca import tokens

    prov = authority.provisioners["default"]
    token, _ = tokens.mint(prov.private_key, "default", "a.internal", ["a.internal"], timedelta(minutes=5),  # type: ignore[arg-type]
                           now=datetime.now(UTC) - timedelta(hours=1))
    _, csr = new_csr("a.internal")
    assert_problem(client.post("/v1/sign", json={"csr": csr.decode(), "token": token}), 401, "tokenExpired")
    assert ledger(authority) == []


def test_forged_token_is_refused(client: TestClient, authority: Authority) -> None:
    now = int(time.time())
    claims = {"iss": "default", "aud": "trustyard:sign", "sub": "a.internal", "sans": ["a.internal"],
              "iat": now, "nbf": now, "exp": now + 300, "jti": "forged"}
    forged = jwt.encode(claims, generate_private_key(KeyType.EC_P256), algorithm="ES256", headers={"kid": "default"})
    _, csr = new_csr("a.internal")
    assert_problem(client.post("/v1/sign", json={"csr": csr.decode(), "token": forged}), 401, "badToken")
    # alg confusion: an HMAC token keyed with the public key must not pass either
    none_token = jwt.encode(claims, "s" * 64, algorithm="HS256", headers={"kid": "default"})
    assert_problem(client.post("/v1/sign", json={"csr": csr.decode(), "token": none_token}), 401, "badToken")
    assert ledger(authority) == []


def test_foreign_name_token_is_refused(client: TestClient, authority: Authority) -> None:
    token = authority.mint_token("default", "orders.internal", [])
    _, csr = new_csr("billing.internal")
    doc = assert_problem(client.post("/v1/sign", json={"csr": csr.decode(), "token": token}), 403,
                         "tokenNameMismatch")
    assert doc["value"] == ["billing.internal"]
    assert ledger(authority) == []


def test_token_for_disallowed_name_cannot_be_minted(authority: Authority) -> None:
    from trustyard.errors import PolicyDenied

    with pytest.raises(PolicyDenied) as info:
        authority.mint_token("default", "orders.example.com", [])
    assert info.value.rule == "names_allowed"


# -- policy through the API -----------------------------------------------------------------------

def test_policy_refusal_names_rule_and_value(client: TestClient, authority: Authority) -> None:
    _key, response = sign(client, authority, "orders.internal", ttl="90d")
    doc = assert_problem(response, 403, "policyDenied")
    assert doc["rule"] == "ttl_bounds" and doc["value"] == "90d"


def test_csr_asking_for_ca_is_refused(client: TestClient, authority: Authority) -> None:
    key = generate_private_key(KeyType.EC_P256)
    token = authority.mint_token("default", "a.internal", [])
    response = client.post("/v1/sign", json={"csr": csr_pem(key, [x509.DNSName("a.internal")], ca=True).decode(),
                                             "token": token})
    assert assert_problem(response, 403, "policyDenied")["rule"] == "no_ca"
    assert ledger(authority) == []


def test_csr_extensions_are_not_copied(client: TestClient, authority: Authority) -> None:
    key = generate_private_key(KeyType.EC_P256)
    token = authority.mint_token("default", "a.internal", [])
    csr = csr_pem(key, [x509.DNSName("a.internal")], extensions=[
        x509.OCSPNoCheck(), x509.TLSFeature([x509.TLSFeatureType.status_request])])
    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert response.status_code == 201
    leaf = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
    kinds = {type(e.value) for e in leaf.extensions}
    assert x509.OCSPNoCheck not in kinds and x509.TLSFeature not in kinds


def test_disallowed_key_type_is_refused(client: TestClient, authority: Authority) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(65537, 1024)
    token = authority.mint_token("default", "a.internal", [])
    response = client.post("/v1/sign", json={"csr": csr_pem(weak, [x509.DNSName("a.internal")]).decode(),
                                             "token": token})
    doc = assert_problem(response, 403, "policyDenied")
    assert doc["rule"] == "key_type_allowed" and doc["value"] == "rsa-1024"


# -- renew ---------------------------------------------------------------------------------------

def _renew(client: TestClient, key, issued: dict, new_key=None, audience: str = proofs.RENEW):  # type: ignore[no-untyped-def]
    chain = [x509.load_pem_x509_certificate(issued["certificate"].encode())]
    new_key = new_key or generate_private_key(KeyType.EC_P256)
    csr = csr_pem(new_key, [])
    der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
    proof = proofs.make(key, chain, audience, csr_sha256=proofs.csr_digest(der))
    return client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof})


def test_renew_gives_same_identity_new_serial(client: TestClient, authority: Authority) -> None:
    key, first = sign(client, authority, "orders.internal", "spiffe://prod.internal/orders")
    response = _renew(client, key, first.json())
    assert response.status_code == 201, response.text
    old = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    new = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
    assert new.serial_number != old.serial_number
    san = lambda c: c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san(new) == san(old)
    assert authority.store.get(response.json()["serial"]).renewed_from == first.json()["serial"]  # type: ignore[union-attr]
    assert 'trustyard_certificates_renewed_total{provisioner="default"}' in client.get("/metrics").text


def test_renew_with_wrong_key_is_refused(client: TestClient, authority: Authority) -> None:
    _key, first = sign(client, authority, "orders.internal")
    before = ledger(authority)
    other = generate_private_key(KeyType.EC_P256)
    assert_problem(_renew(client, other, first.json()), 401, "badProof")
    assert ledger(authority) == before


def test_renew_of_foreign_certificate_is_refused(client: TestClient, authority: Authority, tmp_path: Path) -> None:
    from trustyard.x509.profiles import LeafSpec, leaf_builder, new_serial, root_builder
    from trustyard.x509.profiles import sign as sign_cert

    key = generate_private_key(KeyType.EC_P256)
    now = datetime.now(UTC)
    other_root = sign_cert(root_builder(key.public_key(), "other", now, timedelta(days=1)), key)
    leaf = sign_cert(leaf_builder(LeafSpec(key.public_key(), (x509.DNSName("orders.internal"),), now,
                                           now + timedelta(hours=1), new_serial()), other_root), key)
    csr = csr_pem(key, [])
    proof = proofs.make(key, [leaf], proofs.RENEW,
                        csr_sha256=proofs.csr_digest(x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)))
    assert_problem(client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof}), 401, "unknownCertificate")


def test_renew_proof_cannot_be_replayed_or_moved_to_another_csr(client: TestClient, authority: Authority) -> None:
    key, first = sign(client, authority, "orders.internal")
    chain = [x509.load_pem_x509_certificate(first.json()["certificate"].encode())]
    csr = csr_pem(generate_private_key(KeyType.EC_P256), [])
    proof = proofs.make(key, chain, proofs.RENEW,
                        csr_sha256=proofs.csr_digest(x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)))
    other_csr = csr_pem(generate_private_key(KeyType.EC_P256), [])
    assert_problem(client.post("/v1/renew", json={"csr": other_csr.decode(), "proof": proof}), 401, "badProof")
    assert client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof}).status_code == 201
    assert_problem(client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof}), 401, "tokenReplayed")


def test_expired_certificate_cannot_be_renewed(client: TestClient, authority: Authority) -> None:
    key, first = sign(client, authority, "orders.internal", ttl="5m")
    authority.clock = lambda: datetime.now(UTC) + timedelta(minutes=10)
    doc = assert_problem(_renew(client, key, first.json()), 403, "expired")
    assert "new token" in doc["detail"]


# -- revoke --------------------------------------------------------------------------------------

def test_revoked_certificate_can_never_be_renewed(client: TestClient, authority: Authority,
                                                  admin: dict[str, str]) -> None:
    key, first = sign(client, authority, "orders.internal")
    serial = first.json()["serial"]
    response = client.post("/v1/revoke", json={"serial": serial, "reason": "keyCompromise"}, headers=admin)
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert_problem(_renew(client, key, first.json()), 403, "revoked")
    assert_problem(client.post("/v1/revoke", json={"serial": serial}, headers=admin), 409, "alreadyRevoked")


def test_holder_can_revoke_with_proof_others_cannot(client: TestClient, authority: Authority) -> None:
    key, first = sign(client, authority, "orders.internal")
    serial = first.json()["serial"]
    chain = [x509.load_pem_x509_certificate(first.json()["certificate"].encode())]
    intruder = proofs.make(generate_private_key(KeyType.EC_P256), chain, proofs.REVOKE, serial=serial)
    assert_problem(client.post("/v1/revoke", json={"serial": serial, "proof": intruder}), 401, "badProof")
    assert_problem(client.post("/v1/revoke", json={"serial": serial}), 401, "unauthorized")
    assert_problem(client.post("/v1/revoke", json={"serial": serial}, headers={"Authorization": "Bearer nope"}),
                   403, "notAdmin")
    assert authority.store.get(serial).status == "issued"  # type: ignore[union-attr]
    proof = proofs.make(key, chain, proofs.REVOKE, serial=serial)
    response = client.post("/v1/revoke", json={"serial": serial, "proof": proof, "reason": "superseded"})
    assert response.status_code == 200 and response.json()["revocation_reason"] == "superseded"


# -- admin endpoints, health, metrics, openapi ----------------------------------------------------

def test_certificates_are_admin_only(client: TestClient, authority: Authority, admin: dict[str, str]) -> None:
    _, first = sign(client, authority, "orders.internal")
    serial = first.json()["serial"]
    assert_problem(client.get("/v1/certificates"), 401, "unauthorized")
    assert_problem(client.get(f"/v1/certificates/{serial}", headers={"Authorization": "Bearer x"}), 403, "notAdmin")
    listed = client.get("/v1/certificates", headers=admin).json()["certificates"]
    assert [c["serial"] for c in listed] == [serial]
    one = client.get(f"/v1/certificates/{serial}", headers=admin).json()
    assert one["certificate"] == first.json()["certificate"]
    assert_problem(client.get("/v1/certificates/abc123", headers=admin), 404, "notFound")


def test_healthz_metrics_openapi(client: TestClient, authority: Authority) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    sign(client, authority, "orders.internal")
    text = client.get("/metrics").text
    assert 'trustyard_certificates_issued_total{provisioner="default"}' in text
    assert "trustyard_request_duration_seconds_bucket" in text
    assert 'trustyard_ca_certificate_seconds_left{role="intermediate"' in text
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/sign" in spec["paths"]


def test_denials_are_counted(client: TestClient, authority: Authority) -> None:
    _, csr = new_csr("a.internal")
    client.post("/v1/sign", json={"csr": csr.decode(), "token": "garbage"})
    assert 'trustyard_requests_denied_total{code="badToken"}' in client.get("/metrics").text


# -- bad input -----------------------------------------------------------------------------------

BAD_BODIES = [
    ("not json", {"content-type": "application/json"}, b"{nope", 400, "malformedJSON"),
    ("array", {"content-type": "application/json"}, b"[1,2]", 400, "malformedJSON"),
    ("wrong type", {"content-type": "text/plain"}, b"{}", 400, "unsupportedMediaType"),
    ("unknown field", {"content-type": "application/json"}, b'{"csr":"x","token":"y","admin":"1"}', 400,
     "unknownField"),
    ("missing field", {"content-type": "application/json"}, b'{"csr":"x"}', 400, "missingField"),
    ("non-string", {"content-type": "application/json"}, b'{"csr":1,"token":"y"}', 400, "badField"),
    ("oversized", {"content-type": "application/json"}, b'{"csr":"' + b"A" * 70000 + b'","token":"y"}', 400,
     "bodyTooLarge"),
    # 30,000 levels is 60,000 bytes: under the 64 KiB body cap, so the parser's recursion limit is what
    # refuses it (a RecursionError inside json.loads), not the size check.
    ("deep nesting", {"content-type": "application/json"}, b"[" * 30000 + b"]" * 30000, 400, "malformedJSON"),
    ("deep object nesting", {"content-type": "application/json"}, b'{"a":' * 10000 + b"1" + b"}" * 10000, 400,
     "malformedJSON"),
]


def test_the_deep_nesting_bodies_are_under_the_body_cap() -> None:
    """The nesting cases must reach the JSON parser: each body is smaller than the default cap."""
    for label, _, body, _, code in BAD_BODIES:
        if "nesting" in label:
            assert len(body) < 64 * 1024, label
            assert code == "malformedJSON"


@pytest.mark.parametrize("path", ["/v1/sign", "/v1/renew", "/v1/revoke"])
@pytest.mark.parametrize("label,headers,body,status,code", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_problems_and_change_nothing(client: TestClient, authority: Authority, path: str,
                                                    label: str, headers: dict, body: bytes, status: int,
                                                    code: str) -> None:
    before = ledger(authority)
    response = client.post(path, content=body, headers=headers)
    if code in ("missingField", "unknownField", "badField") and path != "/v1/sign":
        assert response.status_code == 400  # the field sets differ per endpoint; still a 400 problem
        assert response.headers["content-type"] == "application/problem+json"
    else:
        assert_problem(response, status, code)
    assert ledger(authority) == before
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("csr", ["", "garbage", "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----",
                                 "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 1000 + "\n-----END CERTIFICATE REQUEST-----"])
def test_garbage_csr_is_400(client: TestClient, authority: Authority, csr: str) -> None:
    token = authority.mint_token("default", "a.internal", [])
    assert_problem(client.post("/v1/sign", json={"csr": csr, "token": token}), 400, "badCSR")
    assert ledger(authority) == []


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/v1/nope"), 404, "notFound")
    assert_problem(client.get("/v1/sign"), 405, "methodNotAllowed")


def test_admin_token_is_stored_only_as_hash(ca_home: Path) -> None:
    token = (ca_home / "admin.token").read_text().strip()
    config_text = (ca_home / "trustyard.toml").read_text()
    assert token not in config_text
    assert hashlib.sha256(token.encode()).hexdigest() in config_text


# -- renewal lineage ------------------------------------------------------------------------------

def test_a_certificate_renews_once_and_key_compromise_revokes_its_renewals(
        client: TestClient, authority: Authority, admin: dict[str, str]) -> None:
    key, first = sign(client, authority, "orders.internal")
    x = first.json()
    child_key = generate_private_key(KeyType.EC_P256)
    renewed = _renew(client, key, x, child_key)
    assert renewed.status_code == 201, renewed.text
    child = renewed.json()
    assert authority.store.get(x["serial"]).superseded_by == child["serial"]  # type: ignore[union-attr]

    before = ledger(authority)
    doc = assert_problem(_renew(client, key, x), 409, "superseded")  # a second renewal with X, another key
    assert doc["superseded_by"] == child["serial"] and "renews once" in doc["detail"]
    assert ledger(authority) == before

    grandchild_key = generate_private_key(KeyType.EC_P256)
    grand = _renew(client, child_key, child, grandchild_key)
    assert grand.status_code == 201, grand.text
    grandchild = grand.json()

    response = client.post("/v1/revoke", json={"serial": x["serial"], "reason": "keyCompromise"}, headers=admin)
    assert response.status_code == 200, response.text
    for serial in (x["serial"], child["serial"], grandchild["serial"]):
        record = authority.store.get(serial)
        assert record is not None and record.status == "revoked" and record.revocation_reason == "keyCompromise"
    # one audited step: one entry names every descendant it revoked
    entries = [e for e in authority.store.audit_entries() if e.action == "certificate.revoke"]
    assert len(entries) == 1 and entries[0].target == x["serial"]
    assert entries[0].detail["descendants"] == [child["serial"], grandchild["serial"]]

    assert_problem(_renew(client, child_key, child), 403, "revoked")
    assert_problem(_renew(client, grandchild_key, grandchild), 403, "revoked")
    assert authority.store.verify_audit().ok


def test_a_renewal_retried_with_the_same_key_gets_the_same_certificate(client: TestClient,
                                                                        authority: Authority) -> None:
    key, first = sign(client, authority, "orders.internal")
    new_key = generate_private_key(KeyType.EC_P256)
    renewed = _renew(client, key, first.json(), new_key)
    assert renewed.status_code == 201, renewed.text
    before = ledger(authority)

    again = _renew(client, key, first.json(), new_key)  # a fresh proof, the same CSR key: a retry
    assert again.status_code == 201, again.text
    assert again.json()["serial"] == renewed.json()["serial"]
    assert again.json()["certificate"] == renewed.json()["certificate"]
    assert ledger(authority) == before  # nothing new was signed
    assert [e.target for e in authority.store.audit_entries() if e.action == "certificate.renew.retry"] \
        == [renewed.json()["serial"]]

    assert_problem(_renew(client, key, first.json()), 409, "superseded")  # another key is no retry
    later = datetime.now(UTC) + timedelta(minutes=6)
    authority.clock = lambda: later
    assert_problem(_renew(client, key, first.json(), new_key), 409, "superseded")  # past the window
    assert ledger(authority) == before


def test_key_compromise_reaches_renewals_of_a_certificate_already_revoked(
        client: TestClient, authority: Authority, admin: dict[str, str]) -> None:
    """The holder of a stolen key renews, then revokes the old certificate itself: the
    administrator's keyCompromise revocation still reaches the renewal."""
    key, first = sign(client, authority, "orders.internal")
    x = first.json()
    child = _renew(client, key, x).json()
    chain = [x509.load_pem_x509_certificate(x["certificate"].encode())]
    proof = proofs.make(key, chain, proofs.REVOKE, serial=x["serial"])
    assert client.post("/v1/revoke", json={"serial": x["serial"], "proof": proof}).status_code == 200
    assert authority.store.get(child["serial"]).status == "issued"  # type: ignore[union-attr]
    response = client.post("/v1/revoke", json={"serial": x["serial"], "reason": "keyCompromise"}, headers=admin)
    assert response.status_code == 200 and response.json()["revocation_reason"] == "keyCompromise"
    assert authority.store.get(child["serial"]).status == "revoked"  # type: ignore[union-attr]
    assert_problem(client.post("/v1/revoke", json={"serial": x["serial"], "reason": "keyCompromise"},
                               headers=admin), 409, "alreadyRevoked")


def test_revoking_for_another_reason_leaves_renewals_alone(client: TestClient, authority: Authority,
                                                           admin: dict[str, str]) -> None:
    key, first = sign(client, authority, "orders.internal")
    child = _renew(client, key, first.json()).json()
    response = client.post("/v1/revoke", json={"serial": first.json()["serial"], "reason": "superseded"},
                           headers=admin)
    assert response.status_code == 200
    assert authority.store.get(child["serial"]).status == "issued"  # type: ignore[union-attr]


# -- a token's certificate lifetime is a cap; durations never 500 -----------------------------------

def _lifetime(response) -> timedelta:  # type: ignore[no-untyped-def]
    cert = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
    return cert.not_valid_after_utc - datetime.now(UTC)


def test_a_tokens_cert_ttl_caps_the_certificate(client: TestClient, authority: Authority) -> None:
    from trustyard.errors import PolicyDenied

    with pytest.raises(PolicyDenied) as info:  # a cap the provisioner would never grant: refused at once
        authority.mint_token("default", "orders.internal", [], cert_ttl=timedelta(days=90))
    assert info.value.rule == "ttl_bounds"
    token = authority.mint_token("default", "orders.internal", [], cert_ttl=timedelta(hours=1))
    _, csr = new_csr("orders.internal")
    doc = assert_problem(client.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": "30d"}), 403,
                         "policyDenied")
    assert doc["rule"] == "ttl_cap" and doc["value"] == "30d" and "1h" in doc["detail"]
    assert ledger(authority) == []  # refused before the token was redeemed: it still works
    shorter = client.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": "30m"})
    assert shorter.status_code == 201, shorter.text
    assert timedelta(minutes=29) < _lifetime(shorter) <= timedelta(minutes=30)


def test_a_renewal_keeps_at_most_the_original_lifetime(client: TestClient, authority: Authority) -> None:
    from dataclasses import replace

    token = authority.mint_token("default", "orders.internal", [], cert_ttl=timedelta(hours=1))
    key, csr = new_csr("orders.internal")
    first = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert first.status_code == 201 and timedelta(minutes=59) < _lifetime(first) <= timedelta(hours=1)
    # the operator changes the backdate afterwards: the renewal still gets 1h, not 1h + the old backdate
    prov = authority.provisioners["default"]
    authority.provisioners["default"] = replace(prov, policy=replace(prov.policy, backdate=timedelta(0)))
    renewed = _renew(client, key, first.json())
    assert renewed.status_code == 201, renewed.text
    assert _lifetime(renewed) <= timedelta(hours=1)


BAD_DURATIONS = ["9999999999999d", "-5m", "1e9h", "0s", "\u0661\u0662h", "99999999999999999999999999s",
                 "36501d", "24h\n", "1.5h", "", "h", "5 minutes"]


@pytest.mark.parametrize("ttl", BAD_DURATIONS)
def test_bad_ttl_is_a_400_naming_the_field(client: TestClient, authority: Authority, ttl: str) -> None:
    token = authority.mint_token("default", "orders.internal", [])
    _, csr = new_csr("orders.internal")
    response = client.post("/v1/sign", json={"csr": csr.decode(), "token": token, "ttl": ttl})
    if ttl == "":  # an empty ttl means the default, as before
        assert response.status_code == 201
        return
    doc = assert_problem(response, 400, "badTTL")
    assert doc["field"] == "ttl" and doc["detail"].startswith("ttl: invalid duration")
    assert ledger(authority) == []
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("ttl", BAD_DURATIONS[:8])
def test_bad_durations_refused_when_a_token_is_minted(authority: Authority, ttl: str) -> None:
    """Text becomes a lifetime at the edge (``duration_field``); the authority takes only timedelta."""
    from trustyard.ca.authority import duration_field
    from trustyard.errors import BadRequest

    with pytest.raises(BadRequest) as info:
        duration_field("cert_ttl", ttl)
    assert info.value.fields["field"] == "cert_ttl"
    with pytest.raises(BadRequest) as info:
        duration_field("ttl", ttl)
    assert info.value.fields["field"] == "ttl"
    with pytest.raises(TypeError):
        authority.mint_token("default", "orders.internal", [], cert_ttl=ttl)  # type: ignore[arg-type]


def test_anyone_may_read_a_certificates_status_but_not_its_record(client: TestClient, authority: Authority) -> None:
    """``trustyard check --ca-url`` asks without a token, as OCSP would."""
    _, first = sign(client, authority, "orders.internal")
    serial = first.json()["serial"]
    status = client.get(f"/v1/certificates/{serial}").json()
    assert set(status) == {"serial", "status", "not_after", "fingerprint_sha256", "revoked_at", "revocation_reason",
                           "superseded_by"}
    assert status["status"] == "issued" and status["revoked_at"] is None
    assert_problem(client.get("/v1/certificates/abc123"), 404, "notFound")
    assert_problem(client.get("/v1/certificates"), 401, "unauthorized")  # listing stays the administrator's
