"""The signed audit checkpoint in two slots, written in place: it still catches a deleted tail,
a forged slot, and reads (then upgrades) the older one-document file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from trustyard.ca.home import load_authority
from trustyard.store import AuditEvent
from trustyard.store.audit import checkpoint_mac
from trustyard.store.seal import SLOT_BYTES, AuditSeal

from .support import PASSWORD


def _fill(home: Path, n: int) -> None:
    authority = load_authority(home, PASSWORD)
    try:
        for i in range(n):
            authority.store.audit(AuditEvent(actor="admin", action="token.mint", target="orders.internal",
                                             detail={"i": i}))
    finally:
        authority.store.close()


def _verify(home: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "trustyard", "audit", "verify", "--home", str(home), "--json"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def _slots(home: Path) -> list[dict | None]:
    raw = (home / "ca" / "audit.checkpoint").read_bytes()
    assert len(raw) == 2 * SLOT_BYTES
    lines = [raw[i * SLOT_BYTES:(i + 1) * SLOT_BYTES].decode() for i in range(2)]
    assert all(line.endswith("\n") for line in lines)
    return [json.loads(line) if line.strip() else None for line in lines]


def test_appends_overwrite_the_older_slot_in_place(sqlite_home: Path) -> None:
    """No rename per commit: the file keeps its inode, and its two slots hold the two newest
    checkpoints, so a write cut halfway would leave the other one whole."""
    path = sqlite_home / "ca" / "audit.checkpoint"
    _fill(sqlite_home, 1)
    inode = path.stat().st_ino
    _fill(sqlite_home, 4)
    assert path.stat().st_ino == inode
    seqs = sorted(slot["seq"] for slot in _slots(sqlite_home) if slot)
    assert seqs == [4, 5]
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["checkpoint_seq"] == 5, doc


def test_a_deleted_tail_is_caught_by_the_newer_slot(sqlite_home: Path) -> None:
    _fill(sqlite_home, 6)
    db = sqlite3.connect(sqlite_home / "trustyard.db")
    db.executescript("DELETE FROM audit_log WHERE seq > 4; "
                     "UPDATE audit_head SET seq=4, hash=(SELECT hash FROM audit_log WHERE seq=4);")
    db.close()
    code, doc = _verify(sqlite_home)
    assert code == 1 and any("signed checkpoint records entry 6" in p for p in doc["problems"]), doc


def test_a_forged_slot_is_reported_not_skipped(sqlite_home: Path) -> None:
    """Someone without the key who rewrites the newer slot (to hide a deleted tail behind the
    older one) is caught: every written slot must carry the key's MAC."""
    _fill(sqlite_home, 3)
    path = sqlite_home / "ca" / "audit.checkpoint"
    newer = max(range(2), key=lambda i: (_slots(sqlite_home)[i] or {"seq": -1})["seq"])
    forged = json.dumps({"seq": 2, "hash": "0" * 64, "mac": "0" * 64}).ljust(SLOT_BYTES - 1) + "\n"
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, forged.encode(), newer * SLOT_BYTES)
    os.close(fd)
    code, doc = _verify(sqlite_home)
    assert code == 1 and any("forged" in p for p in doc["problems"]), doc


def test_the_one_document_form_is_read_then_rewritten_in_two_slots(sqlite_home: Path) -> None:
    """A home written by the version before the slots: its checkpoint counts, and the next
    append turns the file into two slots, keeping the old checkpoint in the second."""
    _fill(sqlite_home, 2)
    seal = AuditSeal(sqlite_home / "ca")
    key = seal.load()
    assert key is not None
    db = sqlite3.connect(sqlite_home / "trustyard.db")
    seq, hash_ = db.execute("SELECT seq, hash FROM audit_head").fetchone()
    db.close()
    path = sqlite_home / "ca" / "audit.checkpoint"
    path.write_text(json.dumps({"seq": seq, "hash": hash_, "mac": checkpoint_mac(key[0], seq, hash_)}) + "\n")
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["checkpoint_seq"] == seq, doc
    _fill(sqlite_home, 1)
    assert sorted(slot["seq"] for slot in _slots(sqlite_home) if slot) == [seq, seq + 1]
    code, doc = _verify(sqlite_home)
    assert code == 0 and doc["checkpoint_seq"] == seq + 1, doc


def test_a_reader_never_sees_half_a_slot(sqlite_home: Path) -> None:
    """Readers take the lock file shared: while one thread writes a thousand checkpoints in place,
    another reads every one it can and each is whole and signed."""
    _fill(sqlite_home, 1)
    writer, reader = AuditSeal(sqlite_home / "ca"), AuditSeal(sqlite_home / "ca")
    stop = threading.Event()
    problems: list[str] = []
    seen: list[int] = []

    def read() -> None:
        while not stop.is_set():
            checkpoint, problem = reader.read_checkpoint()
            if problem:
                problems.append(problem)
            elif checkpoint is not None:
                seen.append(checkpoint.seq)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for seq in range(10, 1010):
            writer.note(seq, f"{seq:064x}")
            writer.publish()
    finally:
        stop.set()
        thread.join()
    assert problems == [] and seen and seen == sorted(seen)
    checkpoint, _ = reader.read_checkpoint()
    assert checkpoint is not None and checkpoint.seq == 1009
