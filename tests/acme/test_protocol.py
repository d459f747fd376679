"""Items 1-4: the ACME resources, JWS algorithms, challenges and the state machine, on SQLite
and PostgreSQL, against pebble-challtestsrv as the validation target."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.acme import ari
from trustyard.x509.names import parse_name

from .client import AccountKey, b64, csr_der
from .conftest import Env, authorize, issue, leaf, poll

ACME = "urn:ietf:params:acme:error:"


def problem(response, status: int, kind: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("Replay-Nonce")
    doc = response.json()
    assert doc["type"] == ACME + kind, doc
    return doc


def test_directory_and_nonces(env: Env) -> None:
    directory = env.http.get("/acme/acme/directory").json()
    assert set(directory) >= {"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"}
    head = env.http.head(directory["newNonce"])
    get = env.http.get(directory["newNonce"])
    assert head.status_code == 200 and get.status_code == 204
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    assert head.headers["Cache-Control"] == "no-store"
    assert env.http.get("/acme/default/directory").status_code == 404  # a token provisioner has no ACME


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "EdDSA"])
def test_issue_with_every_account_key_type(env: Env, alg: str) -> None:
    acme = env.account(key=AccountKey(alg))
    _order, pem, key = issue(acme, env.srv, "web.internal")
    cert = leaf(pem)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert [n.value for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value] == \
        ["web.internal"]
    assert len(x509.load_pem_x509_certificates(pem.encode())) == 2  # leaf + intermediate
    record = env.authority.get(format(cert.serial_number, "x"))
    assert record is not None and record.provisioner == "acme" and record.status == "issued"
    audit = [e for e in env.authority.store.audit_entries() if e.action == "certificate.issue"]
    assert audit and audit[-1].actor == "acme"


@pytest.mark.parametrize("kind", ["http-01", "dns-01", "tls-alpn-01"])
def test_each_challenge_type(env: Env, kind: str) -> None:
    acme = env.account()
    issue(acme, env.srv, "app.internal", "api.app.internal", kind=kind)


def test_wildcard_only_by_dns01_and_ip_never_by_dns01(wildcard_env: Env) -> None:
    env = wildcard_env
    acme = env.account()
    response = acme.new_order("*.svc.internal", "127.0.0.1")
    assert response.status_code == 201, response.text
    kinds = {}
    for url in response.json()["authorizations"]:
        authz = acme.post(url).json()
        kinds[authz["identifier"]["value"]] = ({c["type"] for c in authz["challenges"]}, authz.get("wildcard"))
    assert kinds == {"svc.internal": ({"dns-01"}, True), "127.0.0.1": ({"http-01", "tls-alpn-01"}, None)}
    issue(acme, env.srv, "*.svc.internal", kind="dns-01")
    issue(acme, env.srv, "127.0.0.1", kind="http-01")


def test_policy_applies_to_identifiers(env: Env) -> None:
    acme = env.account()
    doc = problem(acme.new_order("web.internal", "example.com"), 400, "rejectedIdentifier")
    assert doc["subproblems"][0]["identifier"] == {"type": "dns", "value": "example.com"}
    problem(acme.new_order("192.168.1.1"), 400, "rejectedIdentifier")
    problem(acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "email", "value": "a@b.internal"}]}),
            400, "unsupportedIdentifier")
    problem(acme.new_order("bad..internal"), 400, "rejectedIdentifier")


def test_finalize_needs_exact_identifiers_and_no_ca(env: Env) -> None:
    acme = env.account()
    response = acme.new_order("a.internal", "b.internal")
    order_url = response.headers["Location"]
    order = response.json()
    problem(acme.post(order["finalize"], {"csr": "AAAA"}), 403, "orderNotReady")
    authorize(acme, env.srv, order)
    order = poll(acme, order_url, ("ready",))
    key = ec.generate_private_key(ec.SECP256R1())
    problem(acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name("a.internal")]))}), 400, "badCSR")
    problem(acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name(n) for n in
                                                                  ("a.internal", "b.internal", "c.internal")]))}),
            400, "badCSR")
    problem(acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name(n) for n in ("a.internal", "b.internal")],
                                                            ca=True))}), 400, "badCSR")
    problem(acme.post(order["finalize"], {"csr": b64(b"\x30\x03\x02\x01\x00")}), 400, "badCSR")
    assert acme.post(order_url).json()["status"] == "ready"  # refusals leave the order finalizable
    good = acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name(n) for n in ("b.internal", "a.internal")]))})
    assert good.status_code == 200, good.text
    problem(acme.post(order["finalize"], {"csr": b64(csr_der(key, [parse_name("a.internal"), parse_name("b.internal")]))}),
            403, "orderNotReady")


def test_parallel_finalize_yields_exactly_one_certificate(env: Env) -> None:
    acme = env.account()
    response = acme.new_order("race.internal")
    order_url = response.headers["Location"]
    authorize(acme, env.srv, response.json())
    order = poll(acme, order_url, ("ready",))
    csr = b64(csr_der(ec.generate_private_key(ec.SECP256R1()), [parse_name("race.internal")]))
    before = len(env.authority.store.list(limit=10000))
    results: list[int] = []

    def finalize() -> None:
        results.append(acme.post(order["finalize"], {"csr": csr}).status_code)

    threads = [threading.Thread(target=finalize) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [403] * 7
    assert len(env.authority.store.list(limit=10000)) == before + 1


def test_account_b_cannot_touch_account_a(env: Env) -> None:
    alice, mallory = env.account(), env.account()
    order, pem, _key = issue(alice, env.srv, "alice.internal")
    order_url = alice.post(alice.kid + "/orders").json()["orders"][0]
    pending = alice.new_order("alice2.internal")
    authz_url = pending.json()["authorizations"][0]
    chall_url = alice.post(authz_url).json()["challenges"][0]["url"]
    for url in (order_url, authz_url, chall_url, order["certificate"], alice.kid + "/orders"):
        problem(mallory.post(url), 403, "unauthorized")
    problem(mallory.post(chall_url, {}), 403, "unauthorized")
    problem(mallory.post(authz_url, {"status": "deactivated"}), 403, "unauthorized")
    problem(mallory.post(alice.kid, {"contact": ["mailto:m@evil.internal"]}), 403, "unauthorized")
    problem(mallory.post(pending.json()["finalize"], {"csr": "AAAA"}), 403, "unauthorized")
    problem(mallory.post(mallory.directory["revokeCert"], {"certificate": b64(leaf(pem).public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER))}),
        403, "unauthorized")
    assert alice.post(authz_url).json()["status"] == "pending"


def test_accounts_only_return_existing_update_deactivate(env: Env) -> None:
    acme = env.client()
    problem(acme.post(acme.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True),
            400, "accountDoesNotExist")
    assert acme.register(contact=["mailto:ops@example.internal"]).status_code == 201
    again = acme.post(acme.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert again.status_code == 200 and again.headers["Location"] == acme.kid
    assert acme.register().status_code == 200  # same key: the same account
    problem(acme.post(acme.kid, {"contact": ["tel:+1"]}), 400, "unsupportedContact")
    updated = acme.post(acme.kid, {"contact": ["mailto:new@example.internal"]}).json()
    assert updated["contact"] == ["mailto:new@example.internal"]
    assert acme.post(acme.kid).json()["status"] == "valid"
    assert acme.post(acme.kid, {"status": "deactivated"}).json()["status"] == "deactivated"
    problem(acme.new_order("x.internal"), 403, "unauthorized")


def test_key_rollover(env: Env) -> None:
    acme = env.account()
    new = AccountKey("ES384")
    url = acme.directory["keyChange"]
    inner = new.jws({"alg": new.alg, "jwk": new.jwk, "url": url}, {"account": acme.kid, "oldKey": acme.key.jwk})
    assert acme.post(url, inner).status_code == 200
    old_key = acme.key
    acme.key = new
    assert acme.new_order("x.internal").status_code == 201
    acme.key = old_key
    assert acme.new_order("x.internal").status_code == 400  # the old key no longer verifies
    # a key already bound to another account: 409 with that account's URL
    other = env.account()
    acme.key = new
    inner = other.key.jws({"alg": other.key.alg, "jwk": other.key.jwk, "url": url},
                          {"account": acme.kid, "oldKey": new.jwk})
    response = acme.post(url, inner)
    assert response.status_code == 409 and response.headers["Location"] == other.kid


def test_revoke_by_account_and_by_certificate_key(env: Env) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    acme = env.account()
    _order, pem, _key = issue(acme, env.srv, "rev.internal")
    der = leaf(pem).public_bytes(Encoding.DER)
    problem(acme.post(acme.directory["revokeCert"], {"certificate": b64(der), "reason": 7}), 400,
            "badRevocationReason")
    assert acme.post(acme.directory["revokeCert"], {"certificate": b64(der), "reason": 4}).status_code == 200
    assert env.authority.get(format(leaf(pem).serial_number, "x")).revocation_reason == "superseded"  # type: ignore[union-attr]
    problem(acme.post(acme.directory["revokeCert"], {"certificate": b64(der)}), 400, "alreadyRevoked")
    # by the certificate's own key (jwk), no account involved
    _order, pem2, key2 = issue(acme, env.srv, "rev2.internal")
    der2 = leaf(pem2).public_bytes(Encoding.DER)
    holder = env.client(key=AccountKey("ES256", key2))
    assert holder.post(holder.directory["revokeCert"], {"certificate": b64(der2), "reason": 1},
                       use_jwk=True).status_code == 200
    problem(holder.post(holder.directory["revokeCert"], {"certificate": b64(der2)}, use_jwk=True),
            400, "alreadyRevoked")
    stranger = env.client()
    _order, pem3, _key3 = issue(acme, env.srv, "rev3.internal")
    problem(stranger.post(stranger.directory["revokeCert"], {"certificate": b64(leaf(pem3).public_bytes(Encoding.DER))},
                          use_jwk=True), 403, "unauthorized")


def test_orders_list_and_authz_deactivation(env: Env) -> None:
    acme = env.account()
    first = acme.new_order("one.internal").headers["Location"]
    second = acme.new_order("two.internal")
    listed = acme.post(acme.kid + "/orders").json()["orders"]
    assert listed == [first, second.headers["Location"]]
    authz_url = second.json()["authorizations"][0]
    assert acme.post(authz_url, {"status": "deactivated"}).json()["status"] == "deactivated"
    assert acme.post(second.headers["Location"]).json()["status"] == "invalid"


def test_failed_validation_invalidates_without_echoing(env: Env) -> None:
    acme = env.account()
    response = acme.new_order("fail.internal")
    authz_url = response.json()["authorizations"][0]
    authz = acme.post(authz_url).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    env.srv.add_http01(challenge["token"], "SECRET-CONTENT-FROM-TARGET")
    acme.post(challenge["url"], {})
    done = poll(acme, authz_url)
    assert done["status"] == "invalid"
    chall = next(c for c in done["challenges"] if c["type"] == "http-01")
    assert chall["error"]["type"] == ACME + "incorrectResponse"
    assert "SECRET" not in json.dumps(done)
    order = acme.post(response.headers["Location"]).json()
    assert order["status"] == "invalid"


def test_renewal_info_window_is_two_thirds_of_lifetime(env: Env) -> None:
    acme = env.account()
    _order, pem, _key = issue(acme, env.srv, "ari.internal")
    cert = leaf(pem)
    response = env.http.get(acme.directory["renewalInfo"] + "/" + ari.cert_id(cert))
    assert response.status_code == 200 and int(response.headers["Retry-After"]) > 0
    window = response.json()["suggestedWindow"]
    from datetime import datetime

    start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(start - (cert.not_valid_before_utc + life * 2 / 3)) < timedelta(seconds=2)
    assert cert.not_valid_before_utc + life * 2 / 3 <= end < cert.not_valid_after_utc
    # an order may say which certificate it replaces
    replacing = acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "ari.internal"}],
                                                       "replaces": ari.cert_id(cert)})
    assert replacing.status_code == 201 and replacing.json()["replaces"] == ari.cert_id(cert)
    assert env.http.get(acme.directory["renewalInfo"] + "/AAAA.AQ").status_code == 404
    assert env.http.get(acme.directory["renewalInfo"] + "/nodot").status_code == 400


def test_a_validation_lost_with_its_worker_resumes_when_polled(env: Env) -> None:
    from datetime import datetime

    from sqlalchemy import update

    from trustyard.store.schema import acme_challenges

    acme = env.account()
    response = acme.new_order("stalled.internal")
    authz_url = response.json()["authorizations"][0]
    challenge = next(c for c in acme.post(authz_url).json()["challenges"] if c["type"] == "http-01")
    env.srv.add_http01(challenge["token"], acme.key_authorization(challenge["token"]))
    # as if a worker had marked it processing and died before validating
    with env.authority.store.transaction() as conn:
        conn.execute(update(acme_challenges).where(acme_challenges.c.token == challenge["token"])
                     .values(status="processing", started_at=datetime.now(UTC) - timedelta(minutes=5)))
    assert poll(acme, authz_url)["status"] == "valid"


def _slow_probes(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    import asyncio

    from trustyard.acme.probes import Checker

    check = Checker.check

    async def slow(self: Checker, probe: Any) -> Any:
        await asyncio.sleep(seconds)
        return await check(self, probe)

    monkeypatch.setattr(Checker, "check", slow)


def _answer_challenge(env: Env, name: str) -> tuple[Any, str]:
    acme = env.account()
    authz_url = acme.new_order(name).json()["authorizations"][0]
    challenge = next(c for c in acme.post(authz_url).json()["challenges"] if c["type"] == "http-01")
    env.srv.add_http01(challenge["token"], acme.key_authorization(challenge["token"]))
    assert acme.post(challenge["url"], {}).json()["status"] == "processing"
    return acme, authz_url


def test_a_poll_during_the_validation_waits_for_its_outcome(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first poll after the challenge answer gets "valid", not "pending" and a Retry-After:
    the client needs no sleep and no second signed request."""
    _slow_probes(monkeypatch, 0.4)
    acme, authz_url = _answer_challenge(env, "held.internal")
    started = time.monotonic()
    response = acme.post(authz_url)
    assert response.json()["status"] == "valid" and "Retry-After" not in response.headers
    assert time.monotonic() - started >= 0.3  # it waited for the probe, which took 0.4 s


def test_a_poll_waits_for_a_slow_validation_only_so_long(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from trustyard.api import acme_routes

    monkeypatch.setattr(acme_routes, "POLL_HOLD", 0.2)
    _slow_probes(monkeypatch, 1.5)
    acme, authz_url = _answer_challenge(env, "slowly.internal")
    started = time.monotonic()
    response = acme.post(authz_url)
    assert response.json()["status"] == "pending" and response.headers["Retry-After"] == "1"
    assert 0.15 <= time.monotonic() - started < 1.2
    assert poll(acme, authz_url)["status"] == "valid"  # the probe ran on after the poll gave up waiting


def test_an_order_is_ready_only_when_every_authorization_is_valid(acme_home: Path) -> None:
    from trustyard.ca.config import load_config
    from trustyard.store import open_store
    from trustyard.store.acme_store import AcmeStore, NewAuthz

    store = AcmeStore(open_store(load_config(acme_home).db_url))
    try:
        _order, authzs = store.create_order("acct", "acme", [("dns", "a.internal"), ("dns", "b.internal")],
                                            [NewAuthz("dns", "a.internal", False, ("http-01",)),
                                             NewAuthz("dns", "b.internal", False, ("http-01",))],
                                            timedelta(hours=1), None)
        challenges = [store.get_authz(a.id)[1][0] for a in authzs]  # type: ignore[index]
        for challenge in challenges:
            assert store.start_challenge(challenge.id) is not None
        store.finish_challenge(challenges[0].id, None)
        found = store.get_order_with_authzs(_order.id)
        assert found is not None and found[0].status == "pending"
        assert [a.status for a in found[1]] == ["valid", "pending"]
        store.finish_challenge(challenges[1].id, None)
        found = store.get_order_with_authzs(_order.id)
        assert found is not None and found[0].status == "ready"
    finally:
        store.sql.close()
