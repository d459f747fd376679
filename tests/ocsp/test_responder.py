"""The OCSP responder in-process: statuses, the GET form and its caching headers, RFC error
statuses, the delegated responder certificate, and answers signed once then served from memory."""

from __future__ import annotations

import base64
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from trustyard.ca.authority import Authority, Issued
from trustyard.ca.home import load_authority
from trustyard.ca.ocsp import OcspResponder
from trustyard.store.records import AuditEvent
from trustyard.testing import TestCA

from ..support import PASSWORD, new_csr
from .helpers import ocsp_home, parse, request_der, request_for_serial

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

OK = ocsp.OCSPResponseStatus.SUCCESSFUL


@pytest.fixture
def ca_home(tmp_path: Path) -> Path:
    """The home conftest's ``authority`` and ``client`` fixtures run on: one with OCSP on."""
    return ocsp_home(tmp_path / "ca")


@pytest.fixture
def home(ca_home: Path) -> Path:
    return ca_home


def issue(authority: Authority, name: str = "orders.internal") -> Issued:
    _key, csr = new_csr(name)
    return authority.issue_for_token(csr, authority.mint_token("default", name, [name]))


def post(client: TestClient, der: bytes) -> ocsp.OCSPResponse:
    answer = client.post("/ocsp", content=der, headers={"content-type": "application/ocsp-request"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/ocsp-response"
    return parse(answer.content)


def test_good_then_revoked_with_time_and_reason_at_once(authority: Authority, client: TestClient) -> None:
    issued = issue(authority)
    der = request_der(issued.certificate, issued.chain[0])
    first = post(client, der)
    assert first.response_status == OK and first.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert first.serial_number == issued.certificate.serial_number
    record = authority.revoke(issued.record.serial, "keyCompromise", admin=True)
    second = post(client, der)
    assert second.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert second.revocation_reason == x509.ReasonFlags.key_compromise
    assert record.revoked_at is not None
    assert second.revocation_time_utc == record.revoked_at.replace(microsecond=0)


def test_the_response_is_signed_by_a_delegated_responder_of_the_issuer(authority: Authority,
                                                                       client: TestClient) -> None:
    issued = issue(authority)
    response = post(client, request_der(issued.certificate, issued.chain[0], hashes.SHA256()))
    (responder,) = response.certificates
    inter = issued.chain[0]
    assert responder.issuer == inter.subject
    responder.verify_directly_issued_by(inter)
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert responder.not_valid_after_utc - responder.not_valid_before_utc <= timedelta(days=7, minutes=1)
    assert response.hash_algorithm.name == "sha256"  # the CertID as asked
    from cryptography.hazmat.primitives.asymmetric import ec

    responder.public_key().verify(response.signature, response.tbs_response_bytes,  # type: ignore[call-arg]
                                  ec.ECDSA(response.signature_hash_algorithm))  # type: ignore[arg-type]
    assert response.next_update_utc is not None and response.this_update_utc < datetime.now(UTC)


def test_a_steady_state_request_costs_no_signature(authority: Authority, client: TestClient) -> None:
    issued = issue(authority)
    der = request_der(issued.certificate, issued.chain[0])
    responder: OcspResponder = client.app.state.ocsp  # type: ignore[attr-defined]
    first = client.post("/ocsp", content=der).content
    signed = responder.signatures
    assert signed == 1
    for _ in range(50):
        assert client.post("/ocsp", content=der).content == first
        assert client.get("/ocsp/" + base64.b64encode(der).decode()).content == first
    assert responder.signatures == signed
    authority.revoke(issued.record.serial, "superseded", admin=True)
    revoked = client.post("/ocsp", content=der).content
    assert parse(revoked).certificate_status == ocsp.OCSPCertStatus.REVOKED
    responder.tick()  # the poll finds the revocation again: the revoked answer stays
    for _ in range(20):
        assert client.post("/ocsp", content=der).content == revoked
    assert responder.signatures == signed + 1


def test_a_mass_revocation_clears_the_cache_once_and_the_poll_moves_past_it(authority: Authority,
                                                                           client: TestClient) -> None:
    from trustyard.ca import ocsp as module

    issued = [issue(authority, f"n{i}.internal") for i in range(4)]
    responder: OcspResponder = client.app.state.ocsp  # type: ignore[attr-defined]
    ders = [request_der(i.certificate, i.chain[0]) for i in issued]
    for der in ders[1:]:
        post(client, der)
    for i in issued[:3]:
        authority.store.revoke(i.record.serial, "superseded", AuditEvent("t", "test", i.record.serial))
    limit, module.POLL_LIMIT = module.POLL_LIMIT, 2  # three rows: over the limit
    try:
        responder.poll_revocations()
        assert post(client, ders[1]).certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert post(client, ders[3]).certificate_status == ocsp.OCSPCertStatus.GOOD
        signed = responder.signatures
        responder.poll_revocations()  # nothing new: the cache stays
        post(client, ders[1])
        post(client, ders[3])
        assert responder.signatures == signed
    finally:
        module.POLL_LIMIT = limit


def test_the_get_form_has_rfc5019_cache_headers_and_answers_304_to_its_etag(authority: Authority,
                                                                           client: TestClient) -> None:
    issued = issue(authority)
    der = request_der(issued.certificate, issued.chain[0])
    path = "/ocsp/" + base64.b64encode(der).decode().replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    answer = client.get(path)
    assert answer.status_code == 200
    assert parse(answer.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    control = answer.headers["cache-control"]
    assert "public" in control and "no-transform" in control and "must-revalidate" in control
    max_age = int(control.split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 4 * 3600
    assert answer.headers["etag"] and answer.headers["last-modified"] and answer.headers["expires"]
    again = client.get(path, headers={"if-none-match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    posted = client.post("/ocsp", content=der)
    assert "etag" not in posted.headers  # POST answers are not for HTTP caches


def test_an_unknown_serial_of_our_issuer_is_unknown(authority: Authority, client: TestClient) -> None:
    foreign = TestCA("Elsewhere").issue("orders.internal").cert
    response = post(client, request_for_serial(foreign.serial_number, authority.chain[0]))
    assert response.response_status == OK and response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # The CertID's hashes match (the issuer is ours): only the serial is unknown.
    ours = request_der(issue(authority).certificate, authority.chain[0])
    assert ocsp.load_der_ocsp_request(ours).issuer_key_hash == response.issuer_key_hash


def test_a_certificate_of_another_issuer_is_unauthorized(client: TestClient) -> None:
    other = TestCA("Elsewhere")
    response = post(client, request_der(other.issue("orders.internal").cert, other.cert))
    assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" * 10_000],
                         ids=["empty", "text", "wrong-der", "deep"])
def test_a_malformed_request_gets_malformed_request(client: TestClient, body: bytes) -> None:
    assert post(client, body).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_an_oversized_or_undecodable_request_gets_malformed_request(authority: Authority,
                                                                    client: TestClient) -> None:
    issued = issue(authority)
    big = request_der(issued.certificate, issued.chain[0], nonce=b"n" * 11_000)
    assert post(client, big).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    for path in ("/ocsp/not*base64", "/ocsp/" + "A" * 20_000, "/ocsp"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert parse(answer.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert client.put("/ocsp", content=b"x").status_code == 405
    metrics = client.get("/metrics").text
    assert 'trustyard_ocsp_responses_total{status="malformedRequest"}' in metrics


def test_a_nonce_is_not_echoed_by_a_presigned_answer(authority: Authority, client: TestClient) -> None:
    issued = issue(authority)
    response = post(client, request_der(issued.certificate, issued.chain[0], nonce=b"0123456789abcdef"))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


def test_a_revocation_by_another_process_is_seen_after_one_poll(authority: Authority, client: TestClient,
                                                                home: Path) -> None:
    issued = issue(authority)
    der = request_der(issued.certificate, issued.chain[0])
    assert post(client, der).certificate_status == ocsp.OCSPCertStatus.GOOD
    other = load_authority(home, PASSWORD)  # another worker or replica: its own store
    try:
        other.revoke(issued.record.serial, "superseded", admin=True)
    finally:
        other.store.close()
    responder: OcspResponder = client.app.state.ocsp  # type: ignore[attr-defined]
    responder.poll_revocations()
    answer = post(client, der)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded


def test_an_answer_past_half_its_life_is_served_and_re_signed_in_the_background(authority: Authority) -> None:
    issued = issue(authority)
    der = request_der(issued.certificate, issued.chain[0])
    earlier = datetime.now(UTC) - timedelta(hours=3)
    responder = OcspResponder(authority, clock=lambda: earlier)
    miss = responder.lookup(der)
    old = responder.resolve(miss)  # type: ignore[arg-type]
    assert responder.lookup(der) is old  # stale (3 h of 4) but valid: served, and queued
    responder.clock = lambda: datetime.now(UTC)
    responder.tick()
    fresh = responder.lookup(der)
    assert fresh is not old and getattr(fresh, "status", None) == "good"
    assert responder.signatures == 2  # the old answer and its successor, signed by tick


def test_leaves_carry_the_aia_ocsp_url_only_when_the_provisioner_asks(tmp_path: Path) -> None:
    home = ocsp_home(tmp_path / "ca", url="https://ca.internal:9443")
    a = load_authority(home, PASSWORD, minting=True)
    try:
        leaf = issue(a).certificate
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [(d.access_method, d.access_location.value) for d in aia] == [
            (x509.AuthorityInformationAccessOID.OCSP, "https://ca.internal:9443/ocsp")]
        plain = load_authority(home, PASSWORD, minting=True)
        try:
            from dataclasses import replace

            plain.provisioners["default"] = replace(plain.provisioners["default"], ocsp_url=None)
            with pytest.raises(x509.ExtensionNotFound):
                issue(plain).certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        finally:
            plain.store.close()
    finally:
        a.store.close()
