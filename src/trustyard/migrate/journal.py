"""A step's file writes, crash-safe: intent first, then backups and staged copies, then renames.

1. The journal row (``store/migrate_store.py``) records every file the step writes: its SHA-256
   before and after, where its backup goes and where the new content is staged.
2. Backups (byte for byte, 0600, in the CA home) and staged copies (beside the target, with its
   mode) are written and synced.
3. Each target is replaced by its staged copy with rename(2): a reader sees the old file or the
   new one.
4. The step marks the row done (with the state move, once its checks pass).

A re-run after a crash reads the pending row: when every staged copy is there (or its target
already has the new content) the renames are finished; otherwise no target was touched yet and
the row is abandoned, so the step starts over. ``TRUSTYARD_TEST_CRASH_AFTER_WRITES=N`` (tests
only, read in ``_crash_point`` alone) ends the process with ``os._exit`` after N renames (or N
files restored by a rollback).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..errors import BadRequest, Code, Conflict
from ..files import write_atomic, write_private
from ..store.migrate_store import JournalRow, MigrateStore

CRASH_ENV = "TRUSTYARD_TEST_CRASH_AFTER_WRITES"
_renames = 0


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def current(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def _crash_point() -> None:
    """Tests only: die between two writes, as a power cut or kill -9 would."""
    global _renames
    limit = os.environ.get(CRASH_ENV)
    if limit is None:
        return
    _renames += 1
    if _renames >= int(limit):
        os._exit(97)


def refuse_symlinks(paths: list[str], roots: list[str]) -> None:
    """Refuse (naming it) a location that is a symlink or lies in a directory reached through a
    symlink below the scanned root it was found under: staging and rename(2) would land at the
    link's target, or turn a file symlink into a regular file. A location under no recorded root
    (a plan saved before roots were kept) is checked itself only."""
    problems = []
    for path in paths:
        target = Path(os.path.abspath(path))
        under = [Path(r) for r in roots if target.is_relative_to(r) and target != Path(r)]
        stop = max(under, key=lambda r: len(r.parts)) if under else target.parent
        p = target
        while p not in (stop, p.parent):
            if p.is_symlink():
                problems.append(path if p == target else f"{path} (through {p})")
                break
            p = p.parent
    if problems:
        raise BadRequest("migrate does not write through symbolic links (point the plan at the real files "
                         "and plan again):\n  " + "\n  ".join(problems),
                         code=Code.MIGRATE_LOCATION, locations=problems)


def plan_writes(bid: str, step: str, contents: dict[str, tuple[bytes | None, int]],
                backups: Path, roots: list[str] | None = None) -> list[dict[str, Any]]:
    """The journal's record of ``contents`` (path -> new bytes or None to remove, mode): only files
    whose content changes. ``{seq}`` in the paths is filled in when the row is made. A location
    reached through a symlink is refused before anything is recorded or written."""
    refuse_symlinks(list(contents), roots or [])
    writes = []
    for n, (path, (data, mode)) in enumerate(contents.items()):
        before = current(path)
        if sha256(before) == sha256(data):
            continue
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name)
        target = Path(path)
        writes.append({
            "path": path, "before": sha256(before), "after": sha256(data), "mode": mode,
            "old_mode": (os.stat(path).st_mode & 0o777) if before is not None else None,
            "backup": str(backups / bid / "{seq}" / f"{n:02d}-{safe}") if before is not None else None,
            "staged": str(target.with_name(f".{target.name}.trustyard-{{seq}}")) if data is not None else None,
        })
    return writes


def execute(store: MigrateStore, seq: int, contents: dict[str, tuple[bytes | None, int]]) -> None:
    """Backups and staged copies for journal row ``seq``, then the renames."""
    row = store.journal_get(seq)
    for w in row.writes:
        if w["backup"]:
            data = current(w["path"])
            if sha256(data) != w["before"]:
                raise Conflict(f"{w['path']} changed while the step ran: re-run it", code=Code.LOCATION_CHANGED,
                               location=w["path"])
            assert data is not None
            write_private(w["backup"], data)
        if w["staged"]:
            new = contents[w["path"]][0]
            assert new is not None
            write_atomic(w["staged"], new, mode=w["mode"])
    _rename_all(row)


def _rename_all(row: JournalRow) -> None:
    for w in row.writes:
        if sha256(current(w["path"])) == w["after"]:
            continue
        if w["staged"]:
            os.replace(w["staged"], w["path"])
        else:
            Path(w["path"]).unlink(missing_ok=True)
        _sync_dir(w["path"])
        _crash_point()


def resume(store: MigrateStore, row: JournalRow) -> bool:
    """Finish a pending row's renames; False (the row abandoned) when its staging never finished,
    which means no target was touched."""
    def ready(w: dict[str, Any]) -> bool:
        if sha256(current(w["path"])) == w["after"]:
            return True
        if w["backup"] and sha256(current(w["backup"])) != w["before"]:
            return False
        return w["staged"] is None or sha256(current(w["staged"])) == w["after"]

    if all(ready(w) for w in row.writes):
        _rename_all(row)
        return True
    for w in row.writes:  # nothing was renamed: the targets are as before
        if w["staged"]:
            Path(w["staged"]).unlink(missing_ok=True)
    store.journal_mark(row.seq, "abandoned")
    return False


def abandon(store: MigrateStore, row: JournalRow) -> None:
    """A step failed while writing row ``row``: remove its staged copies, put back (or remove) any
    target already renamed, and mark the row abandoned so a re-run starts over."""
    for w in reversed(row.writes):
        if w["staged"]:
            with contextlib.suppress(OSError):
                Path(w["staged"]).unlink(missing_ok=True)
        now = sha256(current(w["path"]))
        if now == w["after"] and now != w["before"]:
            if w["backup"] and sha256(current(w["backup"])) == w["before"]:
                write_atomic(w["path"], Path(w["backup"]).read_bytes(), mode=w["old_mode"] or 0o600)
            elif not w["backup"]:
                Path(w["path"]).unlink(missing_ok=True)
    store.journal_mark(row.seq, "abandoned")


def undo(row: JournalRow) -> list[str]:
    """Put every file of a done row back as its backup holds it (or remove what it created).
    A file changed since the step is refused, naming it, before anything is restored."""
    check_undo(row)
    restored = []
    for w in reversed(row.writes):
        if sha256(current(w["path"])) == w["before"]:
            continue
        if w["backup"]:
            write_atomic(w["path"], Path(w["backup"]).read_bytes(), mode=w["old_mode"] or 0o600)
        else:
            Path(w["path"]).unlink(missing_ok=True)
            _sync_dir(w["path"])
        restored.append(w["path"])
        _crash_point()
    return restored


def check_undo(row: JournalRow) -> None:
    """Refuse (naming the file) when ``undo`` could not put every file of the row back."""
    for w in row.writes:
        now = sha256(current(w["path"]))
        if now not in (w["after"], w["before"]):
            raise Conflict(f"{w['path']} changed since the step wrote it: restore it by hand from {w['backup']}"
                           if w["backup"] else f"{w['path']} changed since the step wrote it",
                           code=Code.LOCATION_CHANGED, location=w["path"])
        if w["backup"] and sha256(current(w["backup"])) != w["before"]:
            raise Conflict(f"the backup {w['backup']} of {w['path']} is missing or damaged", code=Code.LOCATION_CHANGED,
                           location=w["path"])


def _sync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
