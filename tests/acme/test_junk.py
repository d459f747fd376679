"""Unauthenticated traffic cannot grow the database without bound. Refusals
are counted per source and reason per interval, nonces are capped per client, and expired
or abandoned ACME objects are purged on a schedule inside ``serve``."""

from __future__ import annotations

import json
import sqlite3
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from sqlalchemy import inspect

from trustyard.ca.config import load_config
from trustyard.store import open_store, refusals
from trustyard.store.acme_store import AcmeStore, NewAuthz
from trustyard.store.schema import acme_authzs, acme_challenges, acme_orders

from ..support import Server, start_server, str_ctx
from .client import JOSE, AccountKey, Acme

NONCES_PER_CLIENT = 4


def _configure(home: Path, **acme: Any) -> None:
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc.setdefault("acme", {}).update(acme)
    path.write_text(tomli_w.dumps(doc))


def _db(home: Path) -> Path:
    url = load_config(home).db_url
    assert url.startswith("sqlite:///")
    return Path(url[len("sqlite:///"):])


def _rows(db: Path) -> dict[str, int]:
    """Rows of every table in the real SQLite file."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.fixture
def live(sqlite_home: Path) -> Iterator[Server]:
    _configure(sqlite_home, nonces_per_client=NONCES_PER_CLIENT, purge_interval="1s")
    server = start_server(sqlite_home, workers=1)
    yield server
    server.stop()


@pytest.mark.slow
def test_two_thousand_junk_requests_add_a_handful_of_rows(live: Server) -> None:
    db = _db(live.home)
    root = live.url + "/acme/acme"
    key = AccountKey()
    with httpx.Client(verify=str_ctx(live.root), timeout=30) as http:
        directory = http.get(root + "/directory").json()
        before = _rows(db)

        def jws(url: str, nonce: str, **header: Any) -> str:
            return json.dumps(key.jws({"alg": key.alg, "nonce": nonce, "url": url, **header}, {}))

        statuses: list[int] = []
        for i in range(400):
            nonce = http.head(directory["newNonce"]).headers["Replay-Nonce"]  # a nonce never spent
            statuses.append(http.post(directory["newAccount"], content=b"{not a JWS", headers=JOSE).status_code)
            statuses.append(http.post(directory["newOrder"], headers=JOSE, content=jws(
                directory["newOrder"], nonce, kid=f"{root}/account/nobody{i}")).status_code)
            statuses.append(http.post(directory["newAccount"], headers=JOSE, content=jws(
                directory["newAccount"], f"bogus-nonce-{i}", jwk=key.jwk)).status_code)
            statuses.append(http.post(live.url + "/v1/sign", json={"csr": "x", "token": f"junk.{i}.token"}).status_code)
        after = _rows(db)

    assert len(statuses) == 1600 and all(400 <= s < 500 for s in statuses), set(statuses)
    added = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
    assert added.get("audit_log", 0) == 0 and added.get("acme_accounts", 0) == 0
    assert added.get("acme_nonces", 0) <= NONCES_PER_CLIENT
    # One row per reason (twice that if the hour turned during the test).
    assert added.get("refusals", 0) <= 2 * 4 and sum(added.values()) <= NONCES_PER_CLIENT + 2 * 4, added
    store = open_store(load_config(live.home).db_url)
    try:
        counted = {}
        for row in refusals.rows(store):
            counted[row["reason"]] = counted.get(row["reason"], 0) + row["count"]
            assert row["source"] == "127.0.0.1"
    finally:
        store.close()
    assert counted == {"acme.new-account:malformed": 400, "acme.new-order:accountDoesNotExist": 400,
                       "acme.new-account:badNonce": 400, "certificate.issue:badToken": 400}


def test_an_abandoned_order_is_purged_by_serve(live: Server) -> None:
    db = _db(live.home)
    with httpx.Client(verify=str_ctx(live.root), timeout=30) as http:
        acme = Acme(http, live.url + "/acme/acme/directory")
        assert acme.register().status_code == 201
        abandoned = acme.new_order("left.internal", "behind.internal")
        assert abandoned.status_code == 201, abandoned.text
        kept = acme.new_order("kept.internal")
        order_id = abandoned.headers["Location"].rsplit("/", 1)[1]
        kept_id = kept.headers["Location"].rsplit("/", 1)[1]
        with sqlite3.connect(db) as conn:  # time-travel: the order's hour is over
            conn.execute("UPDATE acme_orders SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (order_id,))
            conn.execute("UPDATE acme_authzs SET expires_at = '2000-01-01 00:00:00.000000' WHERE order_id = ?",
                         (order_id,))

        def left() -> tuple[int, int, int]:
            with sqlite3.connect(db) as conn:
                return (conn.execute("SELECT count(*) FROM acme_orders WHERE id = ?", (order_id,)).fetchone()[0],
                        conn.execute("SELECT count(*) FROM acme_authzs WHERE order_id = ?", (order_id,)).fetchone()[0],
                        conn.execute("SELECT count(*) FROM acme_challenges WHERE authz_id IN (SELECT id FROM "
                                     "acme_authzs WHERE order_id = ?)", (order_id,)).fetchone()[0])

        with sqlite3.connect(db) as conn:
            challenges_before = conn.execute("SELECT count(*) FROM acme_challenges").fetchone()[0]
        assert left()[0] == 1 and left()[1] == 2
        deadline = time.monotonic() + 10  # purge_interval is 1s
        while left()[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left() == (0, 0, 0)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM acme_orders WHERE id = ?", (kept_id,)).fetchone()[0] == 1
            challenges_after = conn.execute("SELECT count(*) FROM acme_challenges").fetchone()[0]
        assert challenges_before - challenges_after == 2 * 3  # http-01, dns-01, tls-alpn-01 of each name
        assert acme.post(abandoned.headers["Location"]).status_code == 404
        assert acme.post(kept.headers["Location"]).json()["status"] == "pending"


def test_purge_keeps_what_is_live_and_valid(acme_home: Path) -> None:
    """The purge called directly (as ``serve`` does on its schedule), on SQLite and PostgreSQL."""
    store = AcmeStore(open_store(load_config(acme_home).db_url))
    try:
        account, _ = store.create_account("acme", "thumb", "{}", [], None)
        authz = [NewAuthz("dns", "a.internal", False, ("http-01",))]
        expired, _ = store.create_order(account.id, "acme", [("dns", "a.internal")], authz, timedelta(seconds=-1), None)
        live, _ = store.create_order(account.id, "acme", [("dns", "a.internal")], authz, timedelta(hours=1), None)
        done, _ = store.create_order(account.id, "acme", [("dns", "a.internal")], authz, timedelta(seconds=-1), None)
        with store.sql.transaction() as conn:  # a finished order: it names its certificate, so it stays
            conn.execute(acme_orders.update().where(acme_orders.c.id == done.id).values(status="valid"))
        deleted = store.purge()
        assert deleted["acme_orders"] == 1 and deleted["acme_authzs"] == 1 and deleted["acme_challenges"] == 1
        assert store.get_order_with_authzs(expired.id) is None
        assert store.get_order_with_authzs(live.id) is not None and store.get_order_with_authzs(done.id) is not None
        with store.sql.transaction(write=False) as conn:
            assert conn.execute(acme_authzs.select()).fetchall().__len__() == 2
            assert conn.execute(acme_challenges.select()).fetchall().__len__() == 2
    finally:
        store.sql.close()


def test_nonces_are_capped_per_client(acme_home: Path) -> None:
    store = AcmeStore(open_store(load_config(acme_home).db_url))
    try:
        mine = [store.mint_nonce(source="192.0.2.7", keep=3) for _ in range(10)]
        theirs = store.mint_nonce(source="198.51.100.1", keep=3)
        ok, _fresh = store.redeem_nonce(mine[0], source="192.0.2.7", keep=3)
        assert not ok  # the oldest were dropped...
        assert all(store.redeem_nonce(n, source="192.0.2.7", keep=3)[0] for n in mine[-2:])  # ...the newest kept
        assert store.redeem_nonce(theirs)[0]  # another client's nonce is not touched
        # The successors of spent nonces (authenticated answers) are not what the cap counts.
        spent = [store.redeem_nonce(store.mint_nonce(source="203.0.113.5", keep=3))[1] for _ in range(6)]
        assert all(store.redeem_nonce(n)[0] for n in spent)
    finally:
        store.sql.close()


def test_only_unauthenticated_nonces_are_indexed_by_client(acme_home: Path) -> None:
    """Migration 0012: the per-client index holds the nonces the trim counts (retry = 1) and
    no others, so the rewrite of a row that redeems a nonce moves no index entry."""
    store = AcmeStore(open_store(load_config(acme_home).db_url))
    try:
        (index,) = inspect(store.sql.engine).get_indexes("acme_nonces")
        where = index["dialect_options"]["sqlite_where" if store.sql.is_sqlite else "postgresql_where"]
        assert index["name"] == "ix_acme_nonces_source" and index["column_names"] == ["source", "expires_at"]
        assert str(where).replace("(", "").replace(")", "") == "retry = 1", where
    finally:
        store.sql.close()


def test_sources_are_counted_by_address_and_ipv6_by_prefix() -> None:
    assert refusals.source_key("192.0.2.7") == "192.0.2.7"
    assert refusals.source_key("2001:db8:1:2:aaaa::1") == refusals.source_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert refusals.source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert refusals.source_key(None) == "unknown"


def test_limits_and_purge_interval_are_checked_in_config(acme_home: Path) -> None:
    from trustyard.errors import ConfigError

    for key, value in (("nonces_per_client", 0), ("validations_per_account", "many"),
                       ("purge_interval", "-5m"), ("purge_interval", "9999999999999d")):
        _configure(acme_home, **{key: value})
        with pytest.raises(ConfigError, match=key):
            load_config(acme_home)
        doc = tomllib.loads((acme_home / "trustyard.toml").read_text())
        del doc["acme"][key]
        (acme_home / "trustyard.toml").write_text(tomli_w.dumps(doc))
    assert load_config(acme_home).acme.purge_seconds == 600
