"""``ca.purge_job.PurgeJob``, the thread of ``serve`` that keeps the tables of one-time things
(used tokens, ACME nonces, abandoned orders) from growing with every request, on SQLite and
PostgreSQL: what it deletes, what it keeps, and that a forgotten token still cannot be replayed."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from trustyard.ca import tokens
from trustyard.ca.authority import Authority
from trustyard.ca.home import load_authority
from trustyard.ca.purge_job import REPLAY_MARGIN, PurgeJob
from trustyard.errors import Code, Unauthorized
from trustyard.store.acme_store import AcmeStore, NewAuthz
from trustyard.store.schema import acme_nonces, acme_orders, used_tokens

from .support import PASSWORD, Server, new_csr, start_server


def _count(authority: Authority, table: object, *where: object) -> int:
    with authority.store.transaction(write=False) as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def test_a_used_token_is_forgotten_only_once_it_can_no_longer_be_replayed(authority: Authority) -> None:
    """The row of a redeemed token outlives the leeway with which an expired token is still
    accepted; once it is gone, the same token is refused as expired, never redeemed again.
    (``tokens.verify`` checks ``exp`` on the real clock, so the token here really expires: it
    is minted already 26 s past its ``exp``, inside the 30 s leeway.)"""
    csrs = [new_csr("purged.internal")[1] for _ in range(3)]
    key = authority.provisioners["default"].private_key
    assert key is not None
    expires_at = datetime.now(UTC).replace(microsecond=0) - tokens.LEEWAY + timedelta(seconds=4)
    token, claims = tokens.mint(key, "default", "purged.internal", ["purged.internal"], timedelta(seconds=60),
                                now=expires_at - timedelta(seconds=60))
    assert claims.expires_at == expires_at < datetime.now(UTC)
    authority.issue_for_token(csrs[0], token)
    assert _count(authority, used_tokens) == 1

    # Past its exp but within the leeway the token still verifies: only its row stops a replay,
    # so a purge now (one that forgot the leeway would take the row) keeps it.
    assert PurgeJob(authority.store, 60).tick()["used_tokens"] == 0
    with pytest.raises(Unauthorized) as replayed:
        authority.issue_for_token(csrs[1], token)
    assert replayed.value.code == Code.TOKEN_REPLAYED

    time.sleep(max(0.0, (expires_at + tokens.LEEWAY - datetime.now(UTC)).total_seconds()) + 1.1)
    job = PurgeJob(authority.store, 60, clock=lambda: expires_at + REPLAY_MARGIN + timedelta(seconds=1))
    assert job.tick()["used_tokens"] == 1 and _count(authority, used_tokens) == 0
    with pytest.raises(Unauthorized) as expired:
        authority.issue_for_token(csrs[2], token)
    assert expired.value.code == Code.TOKEN_EXPIRED
    assert _count(authority, used_tokens) == 0
    # A live token's row stays.
    authority.issue_for_token(new_csr("kept.internal")[1], authority.mint_token("default", "kept.internal", []))
    assert PurgeJob(authority.store, 60).tick()["used_tokens"] == 0 and _count(authority, used_tokens) == 1


def test_one_round_purges_expired_nonces_and_abandoned_orders(authority: Authority) -> None:
    acme = AcmeStore(authority.store)
    stale, fresh = acme.mint_nonce(), acme.mint_nonce()
    with authority.store.transaction() as conn:
        conn.execute(update(acme_nonces).where(acme_nonces.c.nonce == stale)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    account, _ = acme.create_account("acme", "thumb", "{}", [], None)
    authz = [NewAuthz("dns", "a.internal", False, ("http-01",))]
    abandoned, _ = acme.create_order(account.id, "acme", [("dns", "a.internal")], authz, timedelta(seconds=-1), None)
    live, _ = acme.create_order(account.id, "acme", [("dns", "a.internal")], authz, timedelta(hours=1), None)

    deleted = PurgeJob(authority.store, 60).tick()
    assert deleted["acme_nonces"] == 1 and deleted["acme_orders"] == 1 and deleted["acme_authzs"] == 1
    assert _count(authority, acme_nonces, acme_nonces.c.nonce == fresh) == 1
    assert _count(authority, acme_orders) == 1 and acme.get_order_with_authzs(live.id) is not None
    assert acme.get_order_with_authzs(abandoned.id) is None
    assert acme.redeem_nonce(fresh)[0] and not acme.redeem_nonce(stale)[0]


@pytest.fixture
def quick_purge(sqlite_home: Path) -> Path:
    config = sqlite_home / "trustyard.toml"
    text = config.read_text()
    assert "[acme]" not in text
    config.write_text(text + '\n[acme]\npurge_interval = "1s"\n')
    return sqlite_home


def test_serve_purges_expired_used_tokens(quick_purge: Path) -> None:
    """One purge thread in the ``serve`` process (two workers here) deletes the rows."""
    server: Server = start_server(quick_purge, workers=2)
    try:
        with server.client() as http:
            minting = load_authority(quick_purge, PASSWORD, minting=True)
            try:
                for name in ("a.internal", "b.internal"):
                    answer = http.post("/v1/sign", json={"csr": new_csr(name)[1].decode(),
                                                         "token": minting.mint_token("default", name, [])})
                    assert answer.status_code == 201, answer.text
            finally:
                minting.store.close()
        db = quick_purge / "trustyard.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM used_tokens").fetchone()[0] == 2
            conn.execute("UPDATE used_tokens SET expires_at = '2000-01-01 00:00:00.000000' WHERE jti IN "
                         "(SELECT jti FROM used_tokens LIMIT 1)")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                left = conn.execute("SELECT count(*) FROM used_tokens").fetchone()[0]
            if left == 1:
                break
            time.sleep(0.2)
        assert left == 1
    finally:
        server.stop()
