"""`trustyard token` and `trustyard list --home` on a SQLite home run on the standard library's
sqlite3 (store/lite.py) without importing SQLAlchemy; what they write and read is what the
SQLAlchemy store writes and reads, so the audit chain verifies across both writers."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority, open_home_store, open_quick_store
from trustyard.store import AuditEvent, SqlStore, schema
from trustyard.store.lite import AUDIT_COLUMNS, CERTIFICATE_COLUMNS, LiteStore, read_time, stored_time

from .support import PASSWORD, new_csr

HEAVY = ("sqlalchemy", "alembic", "starlette", "uvicorn", "httpx")

# Runs the CLI in this interpreter and, at exit, writes the names of every module it imported.
_PROBE = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _modules():
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_modules)
sys.argv[0] = "trustyard"
runpy.run_module("trustyard", run_name="__main__", alter_sys=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True, env=_env(),
                          timeout=120)


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    """The modules `trustyard ARGS` imported, as its own sys.modules lists them at exit."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.txt"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(out.read_text().split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    """A home made by `trustyard init`, as an operator makes one."""
    home = tmp_path / "ca"
    proc = cli("init", "--home", str(home), "--allow", "*.internal")
    assert proc.returncode == 0, proc.stderr
    return home


def mint(home: Path, name: str) -> str:
    proc = cli("token", name, "--home", str(home))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def verify(home: Path) -> tuple[int, dict]:
    proc = cli("audit", "verify", "--home", str(home), "--json")
    return proc.returncode, json.loads(proc.stdout)


def test_token_and_list_import_no_sql_engine(cli_home: Path, tmp_path: Path) -> None:
    token_modules = imported_by(tmp_path, "token", "a.internal", "--home", str(cli_home))
    list_modules = imported_by(tmp_path, "list", "--home", str(cli_home), "--json")
    assert "trustyard.store.lite" in token_modules and "trustyard.store.lite" in list_modules
    assert heavy(token_modules) == [] and heavy(list_modules) == []
    # The probe sees the engine where it is loaded: `audit` still reads through SqlStore.
    assert "sqlalchemy" in imported_by(tmp_path, "audit", "--home", str(cli_home))
    # ... and the token was minted and audited all the same.
    assert [e["action"] for e in json.loads(cli("audit", "--home", str(cli_home), "--json").stdout)["entries"]] \
        == ["token.mint"]


def test_stored_times_are_sqlalchemys() -> None:
    """LiteStore writes and reads times exactly as SQLAlchemy's SQLite DateTime does."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    column = schema.audit_log.c.at.type.dialect_impl(dialect)
    bind, result = column.bind_processor(dialect), column.result_processor(dialect, None)
    for value in (datetime(2026, 12, 7, 18, 5, 9, 123456, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                  datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC)):
        assert stored_time(value) == bind(value)
        assert read_time(stored_time(value)) == result(bind(value))
    assert read_time(None) is None


def test_column_names_are_the_schemas() -> None:
    assert tuple(c.name for c in schema.certificates.c) == CERTIFICATE_COLUMNS
    assert tuple(c.name for c in schema.audit_log.c) == AUDIT_COLUMNS


def test_chain_from_both_writers_verifies_and_tampering_is_caught(cli_home: Path) -> None:
    """Tokens minted by the CLI (sqlite3) between issuances and a revocation through the Authority
    (SQLAlchemy) make one chain that verifies; editing or cutting a sqlite3-written entry is caught."""
    authority = load_authority(cli_home, PASSWORD, minting=True)
    assert isinstance(authority.store, SqlStore)
    try:
        for n in range(2):
            token = mint(cli_home, f"svc{n}.internal")
            issued = authority.issue_for_token(new_csr(f"svc{n}.internal")[1], token)
        authority.mint_token("default", "engine.internal", [])  # the engine's own token.mint
        authority.revoke(issued.record.serial, "superseded", admin=True)
        mint(cli_home, "last.internal")
    finally:
        authority.store.close()
    code, doc = verify(cli_home)
    assert code == 0 and doc["ok"] and doc["keyed"] and doc["entries"] == 7 and doc["checkpoint_seq"] == 7, doc

    db = sqlite3.connect(cli_home / "trustyard.db")
    rows = db.execute("SELECT seq, at, actor, action, detail FROM audit_log ORDER BY seq").fetchall()
    assert [r[3] for r in rows] == ["token.mint", "certificate.issue", "token.mint", "certificate.issue",
                                    "token.mint", "certificate.revoke", "token.mint"]
    for _, at, _, _, detail in rows:  # one storage form whoever wrote the entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", at), at
        assert detail == json.dumps(json.loads(detail), sort_keys=True)
    cli_actor = rows[0][2]
    assert cli_actor.startswith("cli:") and rows[6][2] == cli_actor

    db.execute("UPDATE audit_log SET target = 'evil.internal' WHERE seq = 3")  # a sqlite3-written entry
    db.commit()
    code, doc = verify(cli_home)
    assert code == 1 and any(p.startswith("entry 3 was edited") for p in doc["problems"]), doc
    db.execute("UPDATE audit_log SET target = 'svc1.internal' WHERE seq = 3")
    db.execute("DELETE FROM audit_log WHERE seq = 7")  # the tail, written by sqlite3, head moved with it
    db.execute("UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6)")
    db.commit()
    db.close()
    code, doc = verify(cli_home)
    assert code == 1 and any("signed checkpoint records entry 7" in p for p in doc["problems"]), doc


_ENGINE_APPENDER = """
import sys
from pathlib import Path
from trustyard.ca.config import load_config
from trustyard.ca.home import open_home_store, open_quick_store
from trustyard.store import AuditEvent
config = load_config(Path(sys.argv[1]))
store = open_quick_store(config) if sys.argv[2] == "lite" else open_home_store(config, migrate=False)
assert type(store).__name__ == ("LiteStore" if sys.argv[2] == "lite" else "SqlStore")
for i in range(40):
    store.audit(AuditEvent(actor=sys.argv[2], action="token.mint", target="x.internal", detail={"i": i}))
store.close()
"""


def test_concurrent_writers_of_both_kinds_keep_one_chain(cli_home: Path) -> None:
    """Both writers take the same write lock: appending at once from four processes, two of each
    kind, loses no entry and forks no chain."""
    procs = [subprocess.Popen([sys.executable, "-c", _ENGINE_APPENDER, str(cli_home), kind])
             for kind in ("lite", "engine", "lite", "engine")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    code, doc = verify(cli_home)
    assert code == 0 and doc["entries"] == 160 and doc["checkpoint_seq"] == 160, doc


def test_list_reads_what_the_engine_reads(cli_home: Path) -> None:
    """`list --home` on sqlite3 prints what the SQLAlchemy store returns, for every status filter."""
    authority = load_authority(cli_home, PASSWORD, minting=True)
    try:
        serials = []
        for n in range(4):
            token = authority.mint_token("default", f"l{n}.internal", [f"l{n}.internal", f"alt{n}.internal"])
            serials.append(authority.issue_for_token(new_csr(f"l{n}.internal")[1], token).record.serial)
        authority.revoke(serials[1], "keyCompromise", admin=True)
    finally:
        authority.store.close()
    config = load_config(cli_home)
    engine, lite = open_home_store(config, migrate=False), open_quick_store(config)
    assert isinstance(lite, LiteStore)
    try:
        for status in (None, "issued", "revoked", "pending", "failed"):
            assert lite.list(status, 1000) == engine.list(status, 1000)
        assert lite.list(None, 2, 1) == engine.list(None, 2, 1) and len(lite.list(None, 2, 1)) == 2
        assert lite.list()[0].der is not None and lite.list()[0].not_after.tzinfo is UTC
        expected = [r.to_json() for r in engine.list(None, 1000)]
        revoked = [r.to_json() for r in engine.list("revoked", 1000)]
    finally:
        engine.close()
        lite.close()
    proc = cli("list", "--home", str(cli_home), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"certificates": expected}, proc.stderr
    assert len(expected) == 4 and [r["serial"] for r in expected] == serials
    proc = cli("list", "--home", str(cli_home), "--json", "--status", "revoked")
    assert json.loads(proc.stdout) == {"certificates": revoked} and len(revoked) == 1
    text = cli("list", "--home", str(cli_home)).stdout
    assert all(s in text for s in serials) and "revoked" in text


def test_quick_commands_on_any_home(ca_home: Path) -> None:
    """SQLite homes get the sqlite3 store, PostgreSQL homes keep the SQLAlchemy one; on both the
    token is audited into a chain that verifies and `list --home` lists the ledger."""
    config = load_config(ca_home)
    store = open_quick_store(config)
    try:
        assert isinstance(store, LiteStore if config.db_url.startswith("sqlite") else SqlStore)
    finally:
        store.close()
    token = mint(ca_home, "pg.internal")
    authority = load_authority(ca_home, PASSWORD)
    try:
        serial = authority.issue_for_token(new_csr("pg.internal")[1], token).record.serial
    finally:
        authority.store.close()
    mint(ca_home, "pg2.internal")
    proc = cli("list", "--home", str(ca_home), "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["serial"] for r in json.loads(proc.stdout)["certificates"]] == [serial]
    code, doc = verify(ca_home)
    assert code == 0 and doc["entries"] == 3, doc


def test_unknown_provisioner_is_counted_through_the_engine(cli_home: Path) -> None:
    """A refusal the quick store does not keep itself (counted in aggregate) still reaches the
    database: the CLI refuses, and `audit` shows the count."""
    proc = cli("token", "a.internal", "--provisioner", "nosuch", "--home", str(cli_home))
    assert proc.returncode != 0 and "nosuch" in proc.stderr
    doc = json.loads(cli("audit", "--home", str(cli_home), "--json").stdout)
    assert [r["reason"] for r in doc["refusals"]] == ["token.mint:badToken"] and doc["entries"] == []


def test_lite_store_appends_to_a_log_without_a_head(cli_home: Path) -> None:
    """A database whose audit_head row is missing (never appended to) gets one, as SqlStore makes it."""
    db = sqlite3.connect(cli_home / "trustyard.db")
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
    db.execute("DELETE FROM audit_head")
    db.commit()
    db.close()
    store = open_quick_store(load_config(cli_home))
    try:
        store.audit(AuditEvent(actor="t", action="token.mint", target="x.internal"))
    finally:
        store.close()
    code, doc = verify(cli_home)
    assert code == 0 and doc["entries"] == 1, doc
