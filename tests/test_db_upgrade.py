"""Migrations run in init, serve and `trustyard db upgrade`; other commands check the schema
version (one query, no Alembic) and name the command to run when it is old."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from trustyard.ca.config import load_config
from trustyard.store import version
from trustyard.store.sql import SqlStore

from .support import PASSWORD

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()}
    return subprocess.run([sys.executable, "-m", "trustyard", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _at_revision_0002(home: Path) -> str:
    """Replace the home's database with one an old trustyard made: schema revision 0002, one
    certificate in the ledger."""
    from alembic import command
    from alembic.config import Config

    url = load_config(home).db_url
    db = Path(url[len("sqlite:///"):])
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    store = SqlStore(url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(version.VERSIONS.parent))
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
            conn.execute(text("INSERT INTO certificates (serial, provisioner, subject, sans, status, requested_at, "
                              "not_before, not_after) VALUES ('0abc', 'default', 'old.internal', '[\"old.internal\"]', "
                              "'issued', :now, :now, :now)"), {"now": NOW})
    finally:
        store.engine.dispose()
    return url


def test_commands_refuse_an_old_schema_and_db_upgrade_migrates_it(sqlite_home: Path) -> None:
    url = _at_revision_0002(sqlite_home)
    home = str(sqlite_home)
    for args in (("token", "a.internal", "--home", home), ("list", "--home", home), ("audit", "--home", home)):
        refused = run(*args)
        assert refused.returncode == 2, refused.stderr  # ConfigError's exit code
        assert "schema is at revision 0002" in refused.stderr, refused.stderr
        assert f"run `trustyard db upgrade --home {home}`" in refused.stderr, refused.stderr
        assert refused.stdout == ""
    assert version.current(url) == "0002"  # checking changed nothing

    upgraded = run("db", "upgrade", "--home", home, "--json")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout) == {"from": "0002", "to": version.head(), "changed": True}
    assert version.current(url) == version.head()

    listed = run("list", "--home", home, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["serial"] for c in json.loads(listed.stdout)["certificates"]] == ["0abc"]
    assert run("token", "a.internal", "--home", home).returncode == 0

    again = run("db", "upgrade", "--home", home)
    assert again.returncode == 0 and f"already at {version.head()}" in again.stdout


def test_head_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(version.VERSIONS.parent))
    assert version.head() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_schema_newer_than_this_trustyard_is_refused_as_such(sqlite_home: Path) -> None:
    import sqlite3

    url = load_config(sqlite_home).db_url
    with sqlite3.connect(url[len("sqlite:///"):]) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    refused = run("list", "--home", str(sqlite_home))
    assert refused.returncode == 2
    assert "revision 9999_future, newer than this trustyard knows" in refused.stderr, refused.stderr


def test_token_does_not_import_alembic(sqlite_home: Path) -> None:
    code = ("import contextlib, io, sys\n"
            "from trustyard.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    rc = main(['token', 'a.internal', '--home', {str(sqlite_home)!r}])\n"
            "assert rc == 0 and out.getvalue().count('.') == 2, (rc, out.getvalue())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'httpx')))\n")
    env = {**os.environ, "TRUSTYARD_PASSWORD": PASSWORD.decode()}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # neither the migration tool nor the HTTP client


def test_a_remote_client_command_loads_no_store(tmp_path: Path) -> None:
    code = ("import contextlib, io, sys\n"
            "from trustyard.cli import main\n"
            "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
            f"    rc = main(['issue', 'a.internal', '--token', 't', '--ca-url', 'https://127.0.0.1:1', "
            f"'--root', {str(tmp_path / 'missing.crt')!r}, '--out', {str(tmp_path)!r}])\n"
            "assert rc == 2 and 'no such file' in err.getvalue(), (rc, err.getvalue())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'sqlalchemy')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
