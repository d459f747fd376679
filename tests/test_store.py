"""Items 7 and 8: the ledger and the hash-chained audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import delete, inspect, select, text, update

from trustyard.ca.authority import Authority
from trustyard.cli import main
from trustyard.errors import Unauthorized
from trustyard.store import Intent, open_store
from trustyard.store.schema import audit_log, certificates
from trustyard.store import sql as sql_module
from trustyard.store.sql import SerialCollision, SqlStore

from .support import new_csr

NOW = datetime.now(timezone.utc)


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

        with pytest.raises(RuntimeError):
            with store.unit():
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


# -- audit ---------------------------------------------------------------------------------------

def _fill(authority: Authority) -> str:
    token = authority.mint_token("default", "a.internal", [])
    _, csr = new_csr("a.internal")
    issued = authority.sign(csr, token)
    with pytest.raises(Unauthorized):
        authority.sign(csr, token)  # replay: a denial entry
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
    assert entries[3].actor == "admin" and entries[3].detail == {"reason": "superseded"}
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
    issued = authority.sign(csr, token)
    with authority.store.engine.connect() as conn:
        der = conn.execute(select(certificates.c.der).where(certificates.c.serial == issued.record.serial)).scalar()
    from cryptography.hazmat.primitives.serialization import Encoding

    assert der == issued.certificate.public_bytes(Encoding.DER)
