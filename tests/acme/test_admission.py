"""ACME finalize signs, so it queues with the REST signing requests (``api/admission.py``): with
the worker's queue full it is answered 503 ``rateLimited`` with Retry-After and a fresh nonce,
before its body is read, and the order stays ready to be finalized again."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.api.admission import Admission
from trustyard.x509.names import parse_name

from .client import b64, csr_der
from .conftest import Env, authorize, poll

ACME = "urn:ietf:params:acme:error:"


def test_finalize_with_a_full_queue_is_shed_in_the_acme_form(env: Env) -> None:
    acme = env.account()
    response = acme.new_order("busy.internal")
    order_url = response.headers["Location"]
    authorize(acme, env.srv, response.json())
    order = poll(acme, order_url, ("ready",))
    admission: Admission = env.http.app.state.api.admission  # type: ignore[attr-defined]
    csr = {"csr": b64(csr_der(ec.generate_private_key(ec.SECP256R1()), [parse_name("busy.internal")]))}

    admission.pending = admission.max_pending  # as if that many signing requests were in flight
    try:
        shed = acme.post(order["finalize"], csr)
    finally:
        admission.pending = 0
    assert shed.status_code == 503, shed.text
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.json()["type"] == ACME + "rateLimited"
    assert shed.headers["retry-after"].isdigit() and int(shed.headers["retry-after"]) >= 1
    assert shed.headers["replay-nonce"] and shed.headers["cache-control"] == "no-store"
    assert 'rel="index"' in shed.headers["link"]
    assert acme.post(order_url).json()["status"] == "ready"  # nothing happened to the order

    done = acme.post(order["finalize"], csr)  # with the fresh nonce the refusal carried
    assert done.status_code == 200, done.text
    assert poll(acme, order_url)["status"] == "valid"
    assert admission.pending == 0 and admission.average is not None  # finalize's time was measured
