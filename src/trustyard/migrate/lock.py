"""One process at a time moves a boundary: an exclusive ``flock`` on ``migrate/locks/ID.lock``
in the CA home, held for the whole step (or rollback), naming its holder (pid, host, since).

A lock file and not a lease row: the kernel drops an ``flock`` when its process ends, however it
ends (kill -9, a power cut on reboot), so a crashed step never holds a boundary and there is no
lease time to guess for a step that waits on a reload. The steps write files on this machine
from this CA home, which is where the lock lives; the state's compare-and-set in the database
(``store/migrate_store.py`` ``move``) still guards against anything the lock does not see.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import Code, Conflict
from ..units import format_time


def lock_path(home: Path, bid: str) -> Path:
    return home / "migrate" / "locks" / f"{bid}.lock"


def _holder(fd: int) -> str:
    """What the holder wrote; it writes just after it gets the lock, so read again briefly."""
    for _ in range(20):
        try:
            doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            doc = {}
        if doc.get("pid"):
            since = format_time(datetime.fromtimestamp(doc["since"], UTC))
            host = f" on {doc['host']}" if doc.get("host") and doc["host"] != socket.gethostname() else ""
            return f"pid {doc['pid']}{host} since {since}"
        time.sleep(0.05)
    return "pid unknown"


@contextlib.contextmanager
def boundary_lock(home: Path, bid: str, what: str) -> Iterator[None]:
    """Hold the boundary's lock for the block, or refuse (``migrateBusy``) naming the holder."""
    path = lock_path(home, bid)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by a reload command (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"boundary {bid} is being moved by another process ({_holder(fd)}): wait for it "
                           f"to finish, or check `trustyard migrate status`", code=Code.MIGRATE_BUSY,
                           boundary=bid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                  "what": what}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the file stays: removing it would let two processes lock two files
    finally:
        os.close(fd)  # releases the lock
