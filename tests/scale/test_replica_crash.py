"""Two ``trustyard serve`` replicas on one PostgreSQL behind haproxy survive ``kill -9`` under load,
one then the other, and a restart of PostgreSQL itself.

REST clients redeem bootstrap tokens and renew, ACME clients run http-01 orders, all through
haproxy, retrying as a well-behaved client does (``clients.py``). Afterwards: every client got
its certificate, every certificate handed out is in the ledger, no serial twice, no token or
renewal redeemed twice, no intent left ``pending``, no ACME order in an impossible state,
every error a client saw was a documented retryable one, the audit chain verifies; and the
time until the survivors served every request is printed per event.
"""

from __future__ import annotations

import shutil
import threading
import time
import tomllib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import tomli_w
from sqlalchemy import create_engine, text

from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.ca.retries import PENDING_INTENT_BOUND
from trustyard.store.engine import normalize_url

from ..support import PASSWORD, create_database, postgres_server, run_cli
from .clients import GIVE_UP_S, AcmeClient, Log, RestClient
from .replicas import Replica, Responder, haproxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REST_CLIENTS, ACME_CLIENTS, TOKENS_PER_CLIENT = 4, 2, 150
RECOVERY_BOUND_S = 30.0  # a cut redemption waits out PENDING_INTENT_BOUND (10 s) before it is issued anew


def _home(tmp_path: Path, url: str) -> Path:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "127.0.0.0/8"), database_url=url))
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc["acme"] = {"allow_targets": ["127.0.0.0/8"], "validation_timeout": 5.0}
    path.write_text(tomli_w.dumps(doc))
    return home


def _recovery(events: list[tuple[str, float]], recovered: list[tuple[float, float]], end: float) -> dict[str, float]:
    """Per event, the seconds from it until the last request that first failed after it (and
    before the next event) was served: when the survivors served every request again."""
    out = {}
    for i, (name, started) in enumerate(events):
        until = events[i + 1][1] if i + 1 < len(events) else end
        seen = [done for failed, done in recovered if started <= failed < until]
        out[name] = (max(seen) - started) if seen else 0.0
    return out


def _when_signing(db: object, timeout: float = 3.0) -> None:
    """Return once a bootstrap redemption is between its intent and its certificate (polled), so
    the next crash cuts one (on whichever replica signs it, for a database restart)."""
    deadline = time.monotonic() + timeout
    with db.connect() as conn:  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            if conn.execute(text("SELECT 1 FROM certificates WHERE status = 'pending' AND token_jti IS NOT NULL "
                                 "LIMIT 1")).first():
                return
            conn.rollback()
            time.sleep(0.002)


def _wait_settled(db: object, timeout: float) -> None:
    """Until the sweep has released every intent and order a crash left behind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connect() as conn:  # type: ignore[attr-defined]
            stuck = conn.execute(text("SELECT (SELECT count(*) FROM certificates WHERE status = 'pending') + "
                                      "(SELECT count(*) FROM acme_orders WHERE status = 'processing')")).scalar()
        if stuck == 0:
            return
        time.sleep(0.5)


def test_replicas_survive_kill_9_and_a_postgresql_restart_under_load(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy missing: apt-get install haproxy (scripts/apt-packages.txt)")
    with postgres_server() as pg:
        url = create_database(pg.url, "replicas")
        home = _home(tmp_path, url)
        minter = load_authority(home, PASSWORD, minting=True)
        tokens = [[minter.mint_token("default", f"c{c}-{i}.internal", [f"c{c}-{i}.internal"],
                                     ttl=timedelta(minutes=10)) for i in range(TOKENS_PER_CLIENT)]
                  for c in range(REST_CLIENTS)]
        minter.store.close()
        responder = Responder()
        # Signing 60 ms slower (a slow HSM): a kill -9 finds issuances between intent and certificate.
        env = {"TRUSTYARD_ACME_HTTP_PORT": str(responder.port), "TRUSTYARD_TEST_SIGN_DELAY_MS": "60"}
        # Each replica has its own copy of the home, made after the first audit entry (so the
        # audit key exists and is the same on every replica); the database is the only thing shared.
        replicas = [Replica(Path(shutil.copytree(home, tmp_path / f"replica-{i}")), env) for i in range(2)]
        for replica in replicas:
            replica.start()
        log, stop = Log(), threading.Event()
        db = create_engine(normalize_url(url), pool_pre_ping=True)
        events: list[tuple[str, float]] = []
        try:
            with haproxy([r.port for r in replicas], tmp_path) as port:
                base, root = f"https://127.0.0.1:{port}", str(home / "ca" / "root.crt")
                clients: list[threading.Thread] = [RestClient(log, base, root, t, stop, pace=0.1) for t in tokens]
                acme_clients = [AcmeClient(log, base, root, responder, stop, pace=0.1) for _ in range(ACME_CLIENTS)]
                for client in [*clients, *acme_clients]:
                    client.start()
                time.sleep(4)
                for i, replica in enumerate(replicas):  # kill -9 one, restart it, then the other
                    _when_signing(db)
                    events.append((f"kill -9 replica {i}", time.monotonic()))
                    replica.kill()
                    time.sleep(3)
                    restart_s = replica.start()
                    print(f"replica {i} restarted in {restart_s:.1f}s")
                    time.sleep(3)
                _when_signing(db)
                events.append(("PostgreSQL restart", time.monotonic()))
                pg.restart()
                time.sleep(5)
                stop.set()
                for client in [*clients, *acme_clients]:
                    client.join(GIVE_UP_S + 30)
                end = time.monotonic()
                assert not any(c.is_alive() for c in [*clients, *acme_clients]), "a client is still retrying"
            _wait_settled(db, 2 * PENDING_INTENT_BOUND.total_seconds() + 5)
            _check_ledger(db, log)
            with db.connect() as conn:
                cut = dict(conn.execute(text(
                    "SELECT action, count(*) FROM audit_log WHERE action IN ('certificate.release', "
                    "'certificate.issue.retry', 'certificate.renew.retry') GROUP BY action")).fetchall())
            code, out, err = run_cli("audit", "verify", "--home", str(replicas[0].home))
            assert code == 0, out + err
            print(out.strip())
        finally:
            for replica in replicas:
                replica.stop()
            responder.close()
            db.dispose()

    print("issuances the crashes cut, as the audit log tells:", cut)
    recovery = _recovery(events, log.recovered, end)
    kinds = Counter(what.split(": ", 1)[-1].split(" Retry-After")[0] for _, what in log.errors)
    acme_done = sum(c.completed for c in acme_clients)
    print(f"\ncertificates handed out: {len(log.issued)} ({log.tokens_done} tokens redeemed and renewed, "
          f"{acme_done} ACME orders); ACME orders placed again after a crash cut their finalize: "
          f"{log.orders_replaced}")
    print("retryable errors clients saw:", dict(kinds))
    origin = events[0][1]
    print("events:", ", ".join(f"{name} at {at - origin:+.1f}s" for name, at in events))
    print("errors:", "; ".join(f"{at - origin:+.1f}s {what}" for at, what in log.errors[:40]))
    for name, seconds in recovery.items():
        print(f"time until the survivors served every request after {name}: {seconds:.1f}s")

    assert not log.violations, "\n".join(log.violations[:20])
    assert log.tokens_done == log.tokens_started > REST_CLIENTS, (log.tokens_done, log.tokens_started)
    assert acme_done >= ACME_CLIENTS
    assert log.errors, "no client noticed any crash: the test did not test anything"
    assert cut, "no crash cut an issuance: the retries of cut redemptions went untested"
    assert all(seconds <= RECOVERY_BOUND_S for seconds in recovery.values()), recovery


def _check_ledger(db: object, log: Log) -> None:
    with db.connect() as conn:  # type: ignore[attr-defined]
        rows = {r.serial: r for r in conn.execute(text("SELECT serial, status, der, token_jti FROM certificates"))}
        pending = [s for s, r in rows.items() if r.status == "pending"]
        twice = conn.execute(text(
            "SELECT token_jti FROM certificates WHERE token_jti IS NOT NULL AND status IN ('issued', 'revoked') "
            "GROUP BY token_jti HAVING count(*) > 1")).fetchall()
        renewed_twice = conn.execute(text(
            "SELECT renewed_from FROM certificates WHERE renewed_from IS NOT NULL AND status IN ('issued', 'revoked') "
            "GROUP BY renewed_from HAVING count(*) > 1")).fetchall()
        redemptions = conn.execute(text("SELECT count(*) FROM used_tokens WHERE kind = 'bootstrap'")).scalar()
        impossible = conn.execute(text(
            "SELECT o.id, o.status, o.cert_serial FROM acme_orders o LEFT JOIN certificates c ON c.serial = o.cert_serial "
            "WHERE o.status = 'processing' OR (o.status = 'valid' AND (o.cert_serial IS NULL OR c.status IS NULL "
            "OR c.status <> 'issued')) OR (o.status <> 'valid' AND o.cert_serial IS NOT NULL)")).fetchall()
        fingerprints = conn.execute(text(
            "SELECT count(*), count(DISTINCT fingerprint_sha256) FROM certificates WHERE der IS NOT NULL")).one()
    handed = {}
    for _how, serial, der in log.issued:
        assert handed.setdefault(serial, der) == der, f"serial {serial} handed out for two certificates"
    missing = [s for s, der in handed.items() if s not in rows or rows[s].status != "issued" or rows[s].der != der]
    signed = [s for how, s, _ in log.issued if how == "sign"]
    print(f"ledger: {Counter(r.status for r in rows.values())}; bootstrap redemptions: {redemptions}")
    assert not missing, f"certificates handed out but not issued in the ledger: {missing[:10]}"
    assert len(signed) == len(set(signed)) == log.tokens_done, "two tokens got one certificate"
    assert fingerprints[0] == fingerprints[1], "one certificate stored twice"
    assert not pending, f"intents left pending after the sweep: {pending[:10]}"
    assert not twice, f"tokens that bought two certificates: {twice[:10]}"
    assert not renewed_twice, f"certificates renewed twice: {renewed_twice[:10]}"
    assert not impossible, f"ACME orders in an impossible state: {impossible[:10]}"
