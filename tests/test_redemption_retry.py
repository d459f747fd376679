"""A redemption cut short is retried, not burned: the same bootstrap token with a CSR of the same
key gets the certificate issued for it, or, when a crash cut the signing, a new one under the
same redemption; a renewal cut by a crash likewise. An intent nobody retries is released by the
``serve`` sweep. Runs on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select
from starlette.testclient import TestClient

from trustyard.ca import proofs, tokens
from trustyard.ca.authority import Authority
from trustyard.ca.intent_sweep import IntentSweep
from trustyard.ca.retries import PENDING_INTENT_BOUND
from trustyard.store.schema import used_tokens
from trustyard.x509.keys import KeyType, generate_private_key

from .support import csr_pem, new_csr
from .test_api import assert_problem

SPKI = PublicFormat.SubjectPublicKeyInfo


class Crash(BaseException):
    """The process dies here: nothing after it runs (no ``record_failed``, no answer)."""


@pytest.fixture
def crashing(authority: Authority, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Calling it makes the next ``record_issued`` die like a killed process would."""
    def arm() -> None:
        def die(*_args: Any, **_kwargs: Any) -> bool:
            monkeypatch.undo()
            raise Crash()
        monkeypatch.setattr(authority.store, "record_issued", die)
    yield arm
    monkeypatch.undo()


def later(authority: Authority, by: timedelta) -> None:
    moment = datetime.now(UTC) + by
    authority.clock = lambda: moment


def statuses(authority: Authority) -> dict[str, int]:
    return authority.store.counts()  # type: ignore[attr-defined, no-any-return]


def redemptions(authority: Authority, jti: str) -> int:
    with authority.store.transaction(write=False) as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(used_tokens)
                                .where(used_tokens.c.jti == jti)).scalar_one())


def jti_of(authority: Authority, token: str) -> str:
    return tokens.verify(token, authority._token_keys).jti


def test_a_lost_answer_is_retried_with_the_same_token_and_key(client: TestClient, authority: Authority) -> None:
    key, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", ["orders.internal"])
    first = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert first.status_code == 201, first.text

    again = client.post("/v1/sign", json={"csr": csr_pem(key, []).decode(), "token": token})  # another CSR, same key
    assert again.status_code == 201, again.text
    assert again.json()["serial"] == first.json()["serial"]
    assert again.json()["certificate"] == first.json()["certificate"]
    assert statuses(authority) == {"issued": 1}
    assert [e.target for e in authority.store.audit_entries() if e.action == "certificate.issue.retry"] \
        == [first.json()["serial"]]

    _other_key, other = new_csr("orders.internal")  # the token with another key: a replay
    assert_problem(client.post("/v1/sign", json={"csr": other.decode(), "token": token}), 401, "tokenReplayed")
    assert statuses(authority) == {"issued": 1}
    assert authority.store.verify_audit().ok


def test_a_redemption_cut_by_a_crash_is_released_and_issued_anew(client: TestClient, authority: Authority,
                                                                  crashing: Any) -> None:
    key, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", ["orders.internal"])
    crashing()
    with pytest.raises(Crash):
        authority.issue_for_token(csr, token)
    assert statuses(authority) == {"pending": 1}
    cut = authority.store.list(status="pending")[0].serial

    # Fresh: it may still be signing somewhere: come back later (nothing is spent or changed).
    busy = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert_problem(busy, 503, "redemptionInProgress")
    assert 1 <= int(busy.headers["Retry-After"]) <= PENDING_INTENT_BOUND.total_seconds()
    assert statuses(authority) == {"pending": 1}

    later(authority, PENDING_INTENT_BOUND + timedelta(seconds=1))
    _other_key, other = new_csr("orders.internal")  # another key cannot take the cut redemption over
    assert_problem(client.post("/v1/sign", json={"csr": other.decode(), "token": token}), 401, "tokenReplayed")
    retried = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert retried.status_code == 201, retried.text
    assert retried.json()["serial"] != cut
    leaf = x509.load_pem_x509_certificate(retried.json()["certificate"].encode())
    assert leaf.public_key().public_bytes(Encoding.DER, SPKI) == key.public_key().public_bytes(Encoding.DER, SPKI)
    assert statuses(authority) == {"failed": 1, "issued": 1}
    assert authority.store.get(cut).status == "failed"  # type: ignore[union-attr]
    assert redemptions(authority, jti_of(authority, token)) == 1
    assert [e.target for e in authority.store.audit_entries() if e.action == "certificate.release"] == [cut]

    # and once more: the retry's certificate, not a third one
    third = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert third.status_code == 201 and third.json()["serial"] == retried.json()["serial"]
    assert statuses(authority) == {"failed": 1, "issued": 1}
    assert authority.store.verify_audit().ok


def test_the_sweep_releases_what_nobody_retries_and_the_token_still_works(
        client: TestClient, authority: Authority, crashing: Any) -> None:
    _key, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", ["orders.internal"])
    crashing()
    with pytest.raises(Crash):
        authority.issue_for_token(csr, token)
    store = authority.store
    assert IntentSweep(store).tick() == []  # fresh: left alone
    moment = datetime.now(UTC) + PENDING_INTENT_BOUND + timedelta(seconds=1)
    sweep = IntentSweep(store, clock=lambda: moment)
    released = sweep.tick()
    assert len(released) == 1 and statuses(authority) == {"failed": 1}
    assert sweep.tick() == []  # once

    retried = client.post("/v1/sign", json={"csr": csr.decode(), "token": token})
    assert retried.status_code == 201, retried.text
    assert statuses(authority) == {"failed": 1, "issued": 1}
    assert redemptions(authority, jti_of(authority, token)) == 1
    assert store.verify_audit().ok


def _renew(client: TestClient, key: Any, issued: dict[str, Any], new_key: Any) -> Any:
    chain = [x509.load_pem_x509_certificate(issued["certificate"].encode())]
    csr = csr_pem(new_key, [])
    der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
    proof = proofs.make(key, chain, proofs.RENEW, csr_sha256=proofs.csr_digest(der))
    return client.post("/v1/renew", json={"csr": csr.decode(), "proof": proof})


def test_a_renewal_cut_by_a_crash_is_released_and_renewed(client: TestClient, authority: Authority,
                                                          crashing: Any) -> None:
    key, csr = new_csr("orders.internal")
    token = authority.mint_token("default", "orders.internal", ["orders.internal"])
    first = client.post("/v1/sign", json={"csr": csr.decode(), "token": token}).json()
    new_key = generate_private_key(KeyType.EC_P256)
    chain = [x509.load_pem_x509_certificate(first["certificate"].encode())]
    renew_csr = csr_pem(new_key, [])
    proof = proofs.make(key, chain, proofs.RENEW,
                        csr_sha256=proofs.csr_digest(x509.load_pem_x509_csr(renew_csr).public_bytes(Encoding.DER)))
    crashing()
    with pytest.raises(Crash):
        authority.renew(renew_csr, proof)
    assert statuses(authority) == {"issued": 1, "pending": 1}

    assert_problem(_renew(client, key, first, new_key), 503, "redemptionInProgress")
    later(authority, PENDING_INTENT_BOUND + timedelta(seconds=1))
    renewed = _renew(client, key, first, new_key)
    assert renewed.status_code == 201, renewed.text
    assert statuses(authority) == {"issued": 2, "failed": 1}
    assert authority.store.get(first["serial"]).superseded_by == renewed.json()["serial"]  # type: ignore[union-attr]
    assert authority.store.verify_audit().ok


def test_a_signing_released_while_still_running_answers_503_and_the_retry_gets_a_certificate(
        authority: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signing that outlives the bound (a stalled HSM, a long wait for the write lock, a replica
    whose clock runs ahead) can see its intent released by the sweep. Its answer is a retryable
    503, not a 403 `revoked` that would leave the client with a spent token; the certificate it
    signed is kept on the failed row, never handed out, and the same request again is issued."""
    from trustyard.errors import Code, TrustyardError

    _key, csr = new_csr("slow.internal")
    token = authority.mint_token("default", "slow.internal", ["slow.internal"])
    signer = authority.material.signer
    real = type(signer).sign

    def stalled(self: Any, builder: Any) -> Any:
        IntentSweep(authority.store, clock=lambda: datetime.now(UTC) + PENDING_INTENT_BOUND * 2).tick()
        return real(self, builder)

    monkeypatch.setattr(type(signer), "sign", stalled)
    with pytest.raises(TrustyardError) as refused:
        authority.issue_for_token(csr, token)
    assert refused.value.code == Code.REDEMPTION_IN_PROGRESS and refused.value.status == 503
    assert statuses(authority).get("failed") == 1 and not statuses(authority).get("issued")
    audited = [(e.action, e.outcome, e.detail) for e in authority.store.audit_entries()]  # type: ignore[attr-defined]
    assert any(d.get("released_while_signing") for a, o, d in audited if a == "certificate.issue" and o == "denied")
    assert not any(d.get("revoked_while_signing") for _a, _o, d in audited)
    monkeypatch.undo()
    issued = authority.issue_for_token(csr, token)  # the same request again
    assert issued.record.status == "issued" and statuses(authority).get("issued") == 1
    assert redemptions(authority, jti_of(authority, token)) == 1
