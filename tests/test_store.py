"""Items 7 and 8: the ledger and the hash-chained audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, inspect, select, text, update

from trustyard.ca.authority import Authority
from trustyard.cli import main
from trustyard.errors import Unauthorized
from trustyard.store import Intent, open_store
from trustyard.store import sql as sql_module
from trustyard.store.schema import audit_log, certificates
from trustyard.store.sql import SerialCollision, SqlStore

from .support import new_csr

NOW = datetime.now(UTC)


def intent(serial: str, jti: str | None = None) -> Intent:
    return Intent(serial=serial, provisioner="p", subject="a.internal", sans=("a.internal",), not_before=NOW,
                  not_after=NOW + timedelta(hours=1), requested_at=NOW, token_jti=jti,
                  token_expires_at=NOW + timedelta(minutes=5))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    opened = open_store(db_url)
    yield opened
    opened.close()


def test_migrations_create_schema_and_are_idempotent(store: SqlStore) -> None:
    from alembic.script import ScriptDirectory

    store.migrate()  # a second run (another replica starting) changes nothing
    names = set(inspect(store.engine).get_table_names())
    assert {"certificates", "used_tokens", "audit_log", "audit_head", "alembic_version"} <= names
    scripts = ScriptDirectory(str(Path(sql_module.__file__).parent / "migrations"))
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == scripts.get_current_head()


def test_serial_is_reserved_unique_before_signing(store: SqlStore) -> None:
    store.record_intent(intent("abc"))
    with pytest.raises(SerialCollision):
        store.record_intent(intent("abc"))
    record = store.get("abc")
    assert record is not None and record.status == "pending" and record.der is None


def test_token_redemption_is_atomic_with_the_intent(store: SqlStore) -> None:
    store.record_intent(intent("01", jti="t1"))
    with pytest.raises(Unauthorized) as info:
        store.record_intent(intent("02", jti="t1"))
    assert info.value.code == "tokenReplayed"
    assert store.get("02") is None  # the second intent rolled back with the refused redemption


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert store.integrity_check() == []
    finally:
        store.close()


def test_sqlite_checkpoints_in_a_thread_not_in_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's own checkpoint (inside a COMMIT, two fsyncs) is off; every CHECKPOINT_EVERY
    write commits one runs in a thread of its own, so the WAL is copied back and starts over
    instead of growing with every write."""
    from trustyard.store import engine as engine_module

    monkeypatch.setattr(engine_module, "CHECKPOINT_EVERY", 10)
    store = open_store(f"sqlite:///{tmp_path / 'ckpt.db'}")
    wal = tmp_path / "ckpt.db-wal"
    checkpoints: list[str] = []
    real = store.checkpoint
    monkeypatch.setattr(store, "checkpoint", lambda: (checkpoints.append(threading.current_thread().name), real()))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        for i in range(300):  # a few pages each (the jti alone fills one)
            store.record_intent(intent(f"c{i:03x}", jti="j" * 3000 + str(i)))
            if store._checkpointer is not None:
                store._checkpointer.join(10)  # as a busy writer would meet it, on the next commit
        assert len(checkpoints) == 30 and set(checkpoints) == {"trustyard-wal-checkpoint"}
        # Started over after each: at most about 10 commits' frames (some 16 pages each here),
        # where 300 commits without a checkpoint leave about 17 MB.
        assert wal.stat().st_size < 1_000_000, wal.stat().st_size
        assert len(store.list(limit=1000)) == 300 and store.integrity_check() == []
    finally:
        store.close()


def test_a_unit_is_one_transaction_that_nested_writes_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SqlStore.unit on SQLite: the writes inside commit together at the end, a second
    connection sees none of them before, a failing block rolls all of them back, and a
    durable write inside makes the unit flush the WAL once, after the commit."""
    url = f"sqlite:///{tmp_path / 'unit.db'}"
    store, other = open_store(url), open_store(url)
    flushes: list[int] = []
    monkeypatch.setattr(store, "_flush_wal", lambda: flushes.append(1))
    try:
        with store.unit():
            store.record_intent(intent("u1"))          # durable=False
            assert store.get("u1") is not None          # a nested read sees the unit's writes
            store.record_failed("u1")                   # durable
            assert other.get("u1") is None              # nothing committed yet
            assert flushes == []
        assert other.get("u1") is not None and other.get("u1").status == "failed"  # type: ignore[union-attr]
        assert flushes == [1]

        with pytest.raises(RuntimeError), store.unit():
            store.record_intent(intent("u2"))
            raise RuntimeError("the request failed")
        assert other.get("u2") is None
        assert flushes == [1]

        with store.unit():
            with pytest.raises(SerialCollision):  # a refused statement leaves the unit usable
                store.record_intent(intent("u1"))
            store.record_intent(intent("u3"))
        assert other.get("u3") is not None
    finally:
        store.close()
        other.close()


def test_a_failed_step_inside_a_unit_undoes_only_its_own_writes(tmp_path: Path) -> None:
    """A write joining a unit runs under a SAVEPOINT: when it fails halfway its statements
    go, the unit's other writes stay, exactly as if it had been its own transaction."""
    store = open_store(f"sqlite:///{tmp_path / 'sp.db'}")
    try:
        store.record_intent(intent("taken"))
        with store.unit():
            store.record_intent(intent("kept"))
            with pytest.raises(SerialCollision):  # redeems the token, then the serial collides
                store.record_intent(intent("taken", jti="tok"))
            store.record_intent(intent("retry", jti="tok"))  # so the token is still unspent
        assert store.get("kept") is not None and store.get("retry") is not None
    finally:
        store.close()


def test_threads_do_not_hold_on_to_pool_connections(tmp_path: Path) -> None:
    """Thread pools start and stop threads; each transaction there returns its connection, so
    no number of short-lived threads runs the pool dry (only the main thread keeps one)."""
    store = open_store(f"sqlite:///{tmp_path / 'pool.db'}")
    errors: list[str] = []

    def work(n: int) -> None:
        try:
            store.record_intent(intent(f"t{n}"))
            assert store.get(f"t{n}") is not None
        except Exception as exc:
            errors.append(repr(exc))

    try:
        for n in range(40):  # more than the pool's 5 + 10
            worker = threading.Thread(target=work, args=(n,))
            worker.start()
            worker.join(10)
            assert not worker.is_alive(), "a transaction waited for a pool connection"
        assert errors == []
    finally:
        store.close()


def test_a_forked_child_opens_its_own_lock_file_and_connection(tmp_path: Path) -> None:
    """uvicorn forks its workers: a child must not share the parent's flock descriptor (its
    lock would be the parent's) or its SQLite connection."""
    import os

    store = open_store(f"sqlite:///{tmp_path / 'fork.db'}")
    try:
        store.record_intent(intent("parent"))  # the parent holds a lock file and a kept connection
        parent_fd, parent_conn = store._lock_fd, store._kept[1] if store._kept else None
        assert parent_fd is not None and parent_conn is not None
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            ok = False
            try:
                store.record_intent(intent("child"))
                ok = (store._lock_pid == os.getpid() and store._lock_fd != parent_fd
                      and store._kept is not None and store._kept[1] is not parent_conn)
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("child") is not None
        store.record_intent(intent("parent-again"))
        assert store._lock_fd == parent_fd
    finally:
        store.close()


def test_a_failed_commit_does_not_leave_the_connection_in_a_transaction(tmp_path: Path) -> None:
    """When COMMIT fails, SQLite may keep the transaction (and the write lock) open; the
    kept connection must not be reused like that, or this thread's next transaction and every
    other writer would fail."""
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    store, other = open_store(url), open_store(url)
    try:
        with store.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER "
                                 "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        store._kept_connection().connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
        with pytest.raises(Exception, match="FOREIGN KEY"), store.transaction() as conn:  # fails at COMMIT
            conn.exec_driver_sql("INSERT INTO child VALUES (1, 99)")
        store.record_intent(intent("after"))  # this thread's next transaction
        with other.transaction() as conn:  # and another writer
            conn.exec_driver_sql("INSERT INTO parent VALUES (1)")
        assert other.get("after") is not None
    finally:
        store.close()
        other.close()


def test_only_the_units_own_thread_joins_it(tmp_path: Path) -> None:
    """A thread that inherits the unit's context (a copied context) still gets its own
    transaction: it does not see the unit's uncommitted writes."""
    store = open_store(f"sqlite:///{tmp_path / 'ctx.db'}")
    seen: list[object] = []
    try:
        with store.unit():
            store.record_intent(intent("uncommitted"))
            context = contextvars.copy_context()
            reader = threading.Thread(target=lambda: seen.append(context.run(store.get, "uncommitted")))
            reader.start()
            reader.join(10)
        assert seen == [None] and store.get("uncommitted") is not None
    finally:
        store.close()


def test_work_that_outlives_a_unit_gets_its_own_transaction(tmp_path: Path) -> None:
    """A task started inside a unit copies its context, and runs on the same thread after the
    unit has committed (an ACME validation): it must not join the closed unit."""
    store = open_store(f"sqlite:///{tmp_path / 'late.db'}")
    try:
        with store.unit():
            store.record_intent(intent("in-unit"))
            context = contextvars.copy_context()
        context.run(store.record_intent, intent("after"))
        assert store.get("in-unit") is not None and store.get("after") is not None
    finally:
        store.close()


# -- audit ---------------------------------------------------------------------------------------

def _fill(authority: Authority) -> str:
    token = authority.mint_token("default", "a.internal", [])
    _, csr = new_csr("a.internal")
    issued = authority.issue_for_token(csr, token)
    with pytest.raises(Unauthorized):
        authority.issue_for_token(new_csr("a.internal")[1], token)  # replay (another key): a denial entry
    authority.revoke(issued.record.serial, "superseded", admin=True, actor="admin")
    return issued.record.serial


def test_audit_records_who_what_when_why(authority: Authority) -> None:
    serial = _fill(authority)
    entries = list(authority.store.audit_entries())
    actions = [(e.action, e.outcome) for e in entries]
    assert actions == [("token.mint", "ok"), ("certificate.issue", "ok"), ("request.deny", "denied"),
                       ("certificate.revoke", "ok")]
    deny = entries[2]
    assert deny.detail["code"] == "tokenReplayed" and deny.target == "certificate.issue"
    assert entries[1].target == serial and entries[1].detail["sans"] == ["a.internal"]
    assert entries[3].actor == "admin" and entries[3].detail == {"reason": "superseded", "sans": ["a.internal"]}
    assert all(e.at.tzinfo is not None for e in entries)
    assert authority.store.verify_audit().ok


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "delete_tail", "reorder_hash"])
def test_audit_verify_detects_tampering(authority: Authority, tamper: str) -> None:
    _fill(authority)
    engine = authority.store.engine
    with engine.begin() as conn:
        if tamper == "edit":
            conn.execute(update(audit_log).where(audit_log.c.seq == 2)
                         .values(detail=json.dumps({"subject": "evil.internal"})))
        elif tamper == "delete_middle":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
        elif tamper == "delete_tail":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
        else:
            row = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 3)).scalar()
            conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(hash=row))
    report = authority.store.verify_audit()
    assert not report.ok and report.problems


def test_audit_cli_lists_and_verifies(authority: Authority, ca_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(authority)
    assert main(["audit", "--home", str(ca_home), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in doc["entries"]][:2] == ["token.mint", "certificate.issue"]
    assert main(["audit", "verify", "--home", str(ca_home)]) == 0
    assert "intact: 4 entries" in capsys.readouterr().out
    with authority.store.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 1).values(actor="someone-else"))
    assert main(["audit", "verify", "--home", str(ca_home), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and "entry 1 was edited" in doc["problems"][0]


def test_issued_certificate_stored_before_return(authority: Authority) -> None:
    token = authority.mint_token("default", "a.internal", [])
    _, csr = new_csr("a.internal")
    issued = authority.issue_for_token(csr, token)
    with authority.store.engine.connect() as conn:
        der = conn.execute(select(certificates.c.der).where(certificates.c.serial == issued.record.serial)).scalar()
    from cryptography.hazmat.primitives.serialization import Encoding

    assert der == issued.certificate.public_bytes(Encoding.DER)


# -- renewal lineage in the ledger ----------------------------------------------------------------

def _issued(store: SqlStore, serial: str, renewed_from: str | None = None) -> None:
    from dataclasses import replace

    from trustyard.store import AuditEvent

    store.record_intent(replace(intent(serial), renewed_from=renewed_from))
    assert store.record_issued(serial, b"der-" + serial.encode(), "f" * 64,
                               AuditEvent(actor="p", action="certificate.issue", target=serial))


def test_migration_0004_adds_the_lineage_column(store: SqlStore) -> None:
    columns = {c["name"] for c in inspect(store.engine).get_columns("certificates")}
    indexes = {i["name"] for i in inspect(store.engine).get_indexes("certificates")}
    assert "superseded_by" in columns and "ix_certificates_renewed_from" in indexes


def test_two_renewals_of_one_certificate_cannot_both_win(store: SqlStore) -> None:
    from dataclasses import replace

    from trustyard.errors import Conflict

    _issued(store, "a0")
    store.record_intent(replace(intent("a1"), renewed_from="a0"))
    with pytest.raises(Conflict) as info:
        store.record_intent(replace(intent("a2"), renewed_from="a0"))
    assert info.value.code == "superseded" and info.value.fields["superseded_by"] == "a1"
    assert store.get("a2") is None  # the losing intent rolled back with its refused claim
    # a failed signing releases the claim: the certificate may renew again
    store.record_failed("a1")
    assert store.get("a0").superseded_by is None  # type: ignore[union-attr]
    store.record_intent(replace(intent("a3"), renewed_from="a0"))
    assert store.get("a0").superseded_by == "a3"  # type: ignore[union-attr]


def test_concurrent_renewals_of_one_certificate_claim_it_once(db_url: str) -> None:
    from dataclasses import replace

    from trustyard.errors import Conflict

    stores = [open_store(db_url) for _ in range(4)]
    try:
        _issued(stores[0], "b0")
        barrier, outcomes = threading.Barrier(len(stores)), []

        def renew(i: int) -> None:
            barrier.wait()
            try:
                stores[i].record_intent(replace(intent(f"b{i + 1}"), renewed_from="b0"))
                outcomes.append("won")
            except Conflict as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=renew, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["superseded"] * (len(stores) - 1) + ["won"]
    finally:
        for s in stores:
            s.close()


def test_a_renewal_revoked_while_it_is_signed_stays_revoked(store: SqlStore) -> None:
    from dataclasses import replace

    from trustyard.store import AuditEvent

    _issued(store, "c0")
    store.record_intent(replace(intent("c1"), renewed_from="c0"))  # the renewal is being signed
    store.revoke("c0", "keyCompromise", AuditEvent(actor="admin", action="certificate.revoke", target="c0"),
                 cascade=True)
    assert store.get("c1").status == "revoked"  # type: ignore[union-attr]
    stored = store.record_issued("c1", b"der", "f" * 64,
                                 AuditEvent(actor="p", action="certificate.renew", target="c1"))
    record = store.get("c1")
    assert stored is False and record is not None and record.status == "revoked" and record.der == b"der"
    last = list(store.audit_entries())[-1]
    assert last.outcome == "denied" and last.detail["revoked_while_signing"] is True
    assert store.verify_audit().ok


def test_migration_0004_marks_certificates_renewed_before_it_as_superseded(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    store = SqlStore(db_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(sql_module.__file__).parent / "migrations"))
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
            row = dict(provisioner="p", subject="a.internal", sans="[]", status="issued", requested_at=NOW,
                       not_before=NOW, not_after=NOW + timedelta(hours=1))
            for serial, parent in (("d0", None), ("d1", "d0"), ("d2", None)):
                conn.execute(text("INSERT INTO certificates (serial, provisioner, subject, sans, status, requested_at,"
                                  " not_before, not_after, renewed_from) VALUES (:serial, :provisioner, :subject, "
                                  ":sans, :status, :requested_at, :not_before, :not_after, :renewed_from)"),
                             {**row, "serial": serial, "renewed_from": parent})
        store.migrate()
        assert store.get("d0").superseded_by == "d1"  # type: ignore[union-attr]
        assert store.get("d1").superseded_by is None and store.get("d2").superseded_by is None  # type: ignore[union-attr]
    finally:
        store.close()
