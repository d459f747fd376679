"""The audit log against someone who can write the database (a real SQLite
file, edited with sqlite3 directly) but cannot read the home's ca/audit.key."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trustyard.ca.home import load_authority
from trustyard.store import AuditEvent
from trustyard.store.audit import entry_hash

from .support import PASSWORD


def _db(home: Path) -> Path:
    return home / "trustyard.db"


def _fill(home: Path, n: int = 5, target: str = "orders.internal") -> None:
    authority = load_authority(home, PASSWORD)
    try:
        for i in range(n):
            authority.store.audit(AuditEvent(actor="admin", action="token.mint", target=f"{target}",
                                             detail={"i": i, "sans": [target]}))
    finally:
        authority.store.close()


def _verify(home: Path) -> tuple[int, dict]:
    """`trustyard audit verify --json`, as an operator runs it."""
    proc = subprocess.run([sys.executable, "-m", "trustyard", "audit", "verify", "--home", str(home), "--json"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def _sql(home: Path, script: str) -> None:
    subprocess.run(["sqlite3", str(_db(home)), script], check=True, timeout=30)


def _rehash_plain(home: Path) -> None:
    """What an attacker with the database alone can do: recompute every hash as SHA-256 over
    the stored content, relink the chain and move the head row."""
    conn = sqlite3.connect(_db(home))
    rows = conn.execute("SELECT seq, at, actor, action, target, outcome, detail FROM audit_log ORDER BY seq").fetchall()
    prev = "0" * 64
    for new_seq, (seq, at, actor, action, target, outcome, detail) in enumerate(rows, start=1):
        when = datetime.fromisoformat(at).replace(tzinfo=UTC)
        digest = entry_hash(prev, new_seq, when, actor, action, target, outcome, json.loads(detail))
        conn.execute("UPDATE audit_log SET seq=?, prev_hash=?, hash=? WHERE seq=?", (new_seq, prev, digest, seq))
        prev = digest
    conn.execute("UPDATE audit_head SET seq=?, hash=?", (len(rows), prev))
    conn.commit()
    conn.close()


def test_intact_log_verifies_and_key_is_private(sqlite_home: Path) -> None:
    _fill(sqlite_home)
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["ok"] and doc["entries"] == 5 and doc["keyed"] and doc["plain_entries"] == 0
    assert doc["checkpoint_seq"] == 5
    for name in ("audit.key", "audit.checkpoint"):
        assert stat.S_IMODE(os.stat(sqlite_home / "ca" / name).st_mode) == 0o600


def test_edit_with_recomputed_hashes_is_caught(sqlite_home: Path) -> None:
    _fill(sqlite_home)
    _sql(sqlite_home, "UPDATE audit_log SET target='evil.internal' WHERE seq=2")
    _rehash_plain(sqlite_home)
    code, doc = _verify(sqlite_home)
    assert code == 1 and not doc["ok"]
    assert any(p.startswith("entry 2 was edited") for p in doc["problems"])


def test_deleted_tail_with_head_moved_is_caught(sqlite_home: Path) -> None:
    _fill(sqlite_home)
    _sql(sqlite_home, "DELETE FROM audit_log WHERE seq > 3; "
                      "UPDATE audit_head SET seq=3, hash=(SELECT hash FROM audit_log WHERE seq=3);")
    code, doc = _verify(sqlite_home)
    assert code == 1
    assert any("signed checkpoint records entry 5" in p for p in doc["problems"]), doc


def test_everything_deleted_is_caught(sqlite_home: Path) -> None:
    _fill(sqlite_home)
    _sql(sqlite_home, "DELETE FROM audit_log; DELETE FROM audit_head;")
    code, doc = _verify(sqlite_home)
    assert code == 1 and any("checkpoint records entry 5" in p for p in doc["problems"])


@pytest.mark.parametrize("rehash", [False, True], ids=["plain-delete", "delete-and-rechain"])
def test_deleted_middle_entry_is_caught(sqlite_home: Path, rehash: bool) -> None:
    _fill(sqlite_home)
    _sql(sqlite_home, "DELETE FROM audit_log WHERE seq=3")
    if rehash:
        _rehash_plain(sqlite_home)
    code, doc = _verify(sqlite_home)
    assert code == 1 and doc["problems"]


def test_long_target_and_actor_raise_no_false_alarm(sqlite_home: Path) -> None:
    authority = load_authority(sqlite_home, PASSWORD)
    try:
        authority.store.audit(AuditEvent(actor="a" * 10_000, action="request.deny", target="t" * 10_000,
                                         outcome="denied", detail={"why": "x" * 10_000, "n": (1, 2)}))
        _ = [e for e in authority.store.audit_entries()]
    finally:
        authority.store.close()
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["ok"], doc


def test_home_older_than_the_key_is_keyed_from_its_next_entry(sqlite_home: Path) -> None:
    """An existing home without ca/audit.key: the next append makes the key, earlier entries stay
    plain hashes and are reported as such, and are anchored by the first keyed entry."""
    from trustyard.ca.config import load_config
    from trustyard.store import open_store

    (sqlite_home / "ca" / "audit.key").unlink()
    (sqlite_home / "ca" / "audit.checkpoint").unlink()
    old = open_store(load_config(sqlite_home).db_url)  # what an older version appended with
    for i in range(3):
        old.audit(AuditEvent(actor="admin", action="token.mint", target="old.internal", detail={"i": i}))
    old.close()
    code, doc = _verify(sqlite_home)  # no key yet: plain verification, said so
    assert code == 0 and not doc["keyed"] and any("without the audit key" in n for n in doc["notes"])
    _fill(sqlite_home, n=2)
    assert json.loads((sqlite_home / "ca" / "audit.key").read_text())["keyed_from"] == 4
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["keyed"] and doc["plain_entries"] == 3 and doc["entries"] == 5
    assert any("entries 1-3 were written before the audit key" in n for n in doc["notes"])
    # rewriting a plain entry and rehashing the plain prefix breaks the first keyed entry
    _sql(sqlite_home, "UPDATE audit_log SET target='evil.internal' WHERE seq=2")
    conn = sqlite3.connect(_db(sqlite_home))
    rows = conn.execute("SELECT seq, at, actor, action, target, outcome, detail FROM audit_log "
                        "WHERE seq <= 3 ORDER BY seq").fetchall()
    prev = "0" * 64
    for seq, at, actor, action, target, outcome, detail in rows:
        digest = entry_hash(prev, seq, datetime.fromisoformat(at).replace(tzinfo=UTC), actor, action,
                            target, outcome, json.loads(detail))
        conn.execute("UPDATE audit_log SET prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq))
        prev = digest
    conn.execute("UPDATE audit_log SET prev_hash=? WHERE seq=4", (prev,))
    conn.commit()
    conn.close()
    code, doc = _verify(sqlite_home)
    assert code == 1 and any(p.startswith("entry 4 was edited") for p in doc["problems"]), doc


_APPENDER = """
import sys
from pathlib import Path
from trustyard.ca.config import load_config
from trustyard.ca.home import open_home_store
from trustyard.store import AuditEvent
store = open_home_store(load_config(Path(sys.argv[1])), migrate=False)
for i in range(40):
    store.audit(AuditEvent(actor=sys.argv[2], action="token.mint", target="x.internal", detail={"i": i}))
store.close()
"""


def test_concurrent_appenders_keep_the_checkpoint_consistent(sqlite_home: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(sqlite_home), f"worker-{n}"]) for n in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["entries"] == 120 and doc["checkpoint_seq"] == 120, doc
