"""Nonces valid across workers and replicas (and the rejection knob), External Account Binding,
and the validation ports and resolver taken from trustyard.toml and the environment."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w

from trustyard.ca.config import load_config
from trustyard.store import open_store
from trustyard.store.acme_store import AcmeStore

from ..support import start_server, str_ctx
from .challtestsrv import ChallTestSrv
from .client import JOSE, Acme, b64
from .conftest import Env, issue, make_env

ACME = "urn:ietf:params:acme:error:"


def test_nonces_are_single_use_across_replicas(acme_home: Path) -> None:
    url = load_config(acme_home).db_url
    replica_a, replica_b = AcmeStore(open_store(url)), AcmeStore(open_store(url))
    try:
        nonces = [replica_a.mint_nonce() for _ in range(5)]
        for nonce in nonces:
            ok, fresh = replica_b.redeem_nonce(nonce)
            assert ok and fresh != nonce
            assert replica_a.redeem_nonce(nonce)[0] is False  # spent, whichever replica asks
            assert replica_b.redeem_nonce(nonce)[0] is False
    finally:
        replica_a.sql.close()
        replica_b.sql.close()


def test_nonces_are_single_use_across_worker_processes(acme_home: Path) -> None:
    server = start_server(acme_home, workers=2)
    try:
        root = server.url + "/acme/acme"
        nonces = []
        for _ in range(12):  # a new connection each time, so both workers hand some out
            with httpx.Client(verify=str_ctx(server.root), timeout=10) as c:
                nonces.append(c.head(root + "/new-nonce").headers["Replay-Nonce"])
        with httpx.Client(verify=str_ctx(server.root), timeout=10) as c:
            acme = Acme(c, root + "/directory")
            assert acme.register().status_code == 201
            for nonce in nonces:
                for attempt, expected in ((1, 200), (2, 400)):
                    header = {"alg": acme.key.alg, "nonce": nonce, "url": acme.kid, "kid": acme.kid}
                    with httpx.Client(verify=str_ctx(server.root), timeout=10) as fresh_conn:
                        response = fresh_conn.post(acme.kid, content=json.dumps(acme.key.jws(header, None)),
                                                   headers=JOSE)
                    assert response.status_code == expected, (attempt, response.text)
                    assert response.headers["Replay-Nonce"]
    finally:
        server.stop()


@pytest.fixture
def rejecting_env(acme_home: Path, challtestsrv: ChallTestSrv) -> Iterator[Env]:
    yield from make_env(acme_home, challtestsrv, nonce_reject_percent=100.0)


def test_rejection_knob_refuses_valid_nonces_but_never_a_retry(rejecting_env: Env) -> None:
    acme = rejecting_env.client()
    url = acme.directory["newAccount"]
    header = {"alg": acme.key.alg, "nonce": acme.nonce(), "url": url, "jwk": acme.key.jwk}
    created = rejecting_env.http.post(url, content=json.dumps(acme.key.jws(header, {})), headers=JOSE)
    assert created.status_code == 201, created.text  # a newNonce nonce is always honoured
    header["nonce"] = created.headers["Replay-Nonce"]
    refused = rejecting_env.http.post(url, content=json.dumps(acme.key.jws(header, {})), headers=JOSE)
    assert refused.json()["type"] == ACME + "badNonce"  # a valid nonce from a success, refused by the knob
    header["nonce"] = refused.headers["Replay-Nonce"]
    again = rejecting_env.http.post(url, content=json.dumps(acme.key.jws(header, {})), headers=JOSE)
    assert again.status_code == 200, again.text  # the refusal's nonce is honoured
    # a client that retries once gets through every step, even at 100%
    acme.kid = again.headers["Location"]
    issue(acme, rejecting_env.srv, "knob.internal")


def test_external_account_binding(acme_home: Path, challtestsrv: ChallTestSrv) -> None:
    secret = secrets.token_bytes(32)
    for env in make_env(acme_home, challtestsrv, eab={"acme": {"team-a": b64(secret)}}):
        _check_eab(env, secret)


def _check_eab(env: Env, secret: bytes) -> None:
    acme = env.client()
    assert acme.directory["meta"]["externalAccountRequired"] is True
    assert acme.register().json()["type"] == ACME + "externalAccountRequired"

    def binding(kid: str, key: bytes, jwk: dict | None = None) -> dict:  # type: ignore[type-arg]
        protected = b64(json.dumps({"alg": "HS256", "kid": kid, "url": acme.directory["newAccount"]}))
        payload = b64(json.dumps(jwk or acme.key.jwk))
        mac = hmac.new(key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
        return {"protected": protected, "payload": payload, "signature": b64(mac)}

    assert acme.register(externalAccountBinding=binding("team-a", b"wrong")).json()["type"] == ACME + "unauthorized"
    assert acme.register(externalAccountBinding=binding("team-b", secret)).json()["type"] == ACME + "unauthorized"
    other = {"kty": "OKP", "crv": "Ed25519", "x": b64(b"\x01" * 32)}
    assert acme.register(externalAccountBinding=binding("team-a", secret, other)).json()["type"] == ACME + "unauthorized"
    ok = acme.register(externalAccountBinding=binding("team-a", secret))
    assert ok.status_code == 201 and ok.json()["externalAccountBinding"] == {"kid": "team-a"}


def test_acme_settings_from_toml_and_environment(acme_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = acme_home / "trustyard.toml"
    doc = __import__("tomllib").loads(path.read_text())
    doc["acme"] = {"http_port": 8080, "tls_port": 8443, "resolver": "10.0.0.53:53",
                   "allow_targets": ["10.0.0.0/8", ".svc.internal"], "nonce_reject_percent": 10,
                   "eab": {"acme": {"k1": "c2VjcmV0"}}}
    path.write_text(tomli_w.dumps(doc))
    config = load_config(acme_home)
    assert (config.acme.http_port, config.acme.tls_port, config.acme.resolver) == (8080, 8443, "10.0.0.53:53")
    assert config.acme.allow_targets == ("10.0.0.0/8", ".svc.internal") and config.acme.eab == {"acme": {"k1": "c2VjcmV0"}}
    monkeypatch.setenv("TRUSTYARD_ACME_HTTP_PORT", "5002")
    monkeypatch.setenv("TRUSTYARD_ACME_TLS_PORT", "5001")
    monkeypatch.setenv("TRUSTYARD_ACME_RESOLVER", "127.0.0.1:8053")
    config = load_config(acme_home)
    assert (config.acme.http_port, config.acme.tls_port, config.acme.resolver) == (5002, 5001, "127.0.0.1:8053")
    assert config.acme.nonce_reject_percent == 10
    assert load_config(acme_home).to_toml()["acme"]["http_port"] == 5002


def test_the_resolver_setting_is_an_address_and_port_checked_at_load(acme_home: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from trustyard.errors import ConfigError

    for given, kept in [("[::1]:5353", "[::1]:5353"), ("[fd00::53]:53", "[fd00::53]:53"),
                        (" 10.0.0.53:53 ", "10.0.0.53:53")]:
        monkeypatch.setenv("TRUSTYARD_ACME_RESOLVER", given)
        assert load_config(acme_home).acme.resolver == kept
    for bad in ("dns.internal:53", "10.0.0.53", "10.0.0.53:0", "10.0.0.53:dns", "[::1]", "fd00::1:53",
                "[1.2.3.4]:53", "[::1:53", "[fe80::1%eth0]:53", "[fd00::1%eth0]:53"):
        monkeypatch.setenv("TRUSTYARD_ACME_RESOLVER", bad)
        with pytest.raises(ConfigError, match="IP:port or \\[IPv6\\]:port"):
            load_config(acme_home)
    monkeypatch.setenv("TRUSTYARD_ACME_RESOLVER", "[fe80::1]:53")
    with pytest.raises(ConfigError, match="link-local"):
        load_config(acme_home)
    monkeypatch.delenv("TRUSTYARD_ACME_RESOLVER")
    path = acme_home / "trustyard.toml"
    doc = __import__("tomllib").loads(path.read_text())
    doc["acme"] = {"resolver": 53}
    path.write_text(tomli_w.dumps(doc))
    with pytest.raises(ConfigError, match="IP:port"):
        load_config(acme_home)


def test_a_replica_that_knows_an_account_sees_changes_made_on_another(acme_home: Path,
                                                                        challtestsrv: ChallTestSrv) -> None:
    """Replica B authenticates from the account it read on an earlier request; the nonce
    redemption checks that account's key and status in the database. A key rollover and a
    deactivation done through replica A take effect on B at once, and a bad nonce is still
    a badNonce there."""
    from .client import AccountKey

    replica_a, replica_b = make_env(acme_home, challtestsrv), make_env(acme_home, challtestsrv)
    env_a, env_b = next(replica_a), next(replica_b)
    try:
        on_a = env_a.account()
        on_b = env_b.client(key=on_a.key)
        on_b.kid = on_a.kid
        assert on_b.new_order("seen.internal").status_code == 201  # B now knows the account
        assert on_b.new_order("seen.internal").status_code == 201  # and uses what it knows

        header = {"alg": on_b.key.alg, "nonce": "not-a-nonce-we-gave-out", "url": on_b.directory["newOrder"],
                  "kid": on_b.kid}
        payload = {"identifiers": [{"type": "dns", "value": "seen.internal"}]}
        bad = env_b.http.post(on_b.directory["newOrder"], content=json.dumps(on_b.key.jws(header, payload)),
                              headers=JOSE)
        assert bad.status_code == 400 and bad.json()["type"] == ACME + "badNonce" and bad.headers["Replay-Nonce"]

        new = AccountKey("ES256")
        url = on_a.directory["keyChange"]
        inner = new.jws({"alg": new.alg, "jwk": new.jwk, "url": url}, {"account": on_a.kid, "oldKey": on_a.key.jwk})
        assert on_a.post(url, inner).status_code == 200
        refused = on_b.new_order("seen.internal")  # still signed with the old key
        assert refused.status_code in (400, 401, 403), refused.text
        on_b.key = new
        assert on_b.new_order("seen.internal").status_code == 201

        on_a.key = new
        assert on_a.post(on_a.kid, {"status": "deactivated"}).status_code == 200
        gone = on_b.new_order("seen.internal")
        assert gone.status_code == 403 and gone.json()["type"] == ACME + "unauthorized"
    finally:
        for gen in (replica_a, replica_b):
            next(gen, None)  # runs make_env's clean-up
