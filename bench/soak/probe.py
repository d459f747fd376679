"""What the soak watches while it runs: the resident memory of every process of ``serve`` (the
supervisor and each worker, read from /proc), the CPU seconds spent by ``serve``, by the load
generator and by the whole machine (what the rest of a shared machine took is the difference),
and the SQLite database (the file, its WAL, and the rows of every table, ACME orders by
status), every few seconds, on a thread."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idle and iowait since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def session_processes(sid: int, cpu: dict[int, float] | None = None) -> dict[int, str]:
    """pid -> role ("serve" for ``sid`` itself, "worker" for the others) of session ``sid``;
    their user + system CPU seconds into ``cpu``."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) != sid:
            continue
        pid = int(entry)
        if cpu is not None:
            cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
        if pid == sid:
            found[pid] = "serve"
        elif "resource_tracker" in cmdline:
            found[pid] = "resource-tracker"
        else:
            found[pid] = "worker"
    return found


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def database(path: Path) -> dict[str, Any]:
    """File sizes and row counts, read without taking a write lock (WAL readers never block)."""
    wal = path.with_name(path.name + "-wal")
    out: dict[str, Any] = {"file_bytes": path.stat().st_size, "wal_bytes": wal.stat().st_size if wal.exists() else 0}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        out["rows"] = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        for pragma in ("page_count", "page_size", "freelist_count"):
            out[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        if "acme_orders" in tables:
            out["acme_orders_by_status"] = dict(conn.execute(
                "SELECT status, count(*) FROM acme_orders GROUP BY status").fetchall())
    conn.close()
    return out


@dataclass
class Probe:
    """Samples ``serve`` (session ``sid``) and ``db`` every ``every`` seconds until ``stop``."""

    sid: int
    db: Path
    every: float
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-probe", daemon=True)

    def start(self) -> Probe:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        cpu: dict[int, float] = {}
        processes = session_processes(self.sid, cpu)
        self.roles.update(processes)
        self.cpu.update(cpu)  # the last figure of each process, exited ones included
        own = os.times()
        rss = {pid: value for pid in processes if (value := rss_bytes(pid)) is not None}
        try:
            db: dict[str, Any] | str = database(self.db)
        except sqlite3.Error as exc:  # busy for 10 s: noted, the next sample tries again
            db = f"{type(exc).__name__}: {exc}"
        self.samples.append({"t": round(time.monotonic() - self.started, 2), "rss": rss, "db": db,
                             "serve_cpu_s": round(sum(self.cpu.values()), 2),
                             "loadgen_cpu_s": round(own.user + own.system, 2),
                             "machine_busy_s": round(machine_busy_seconds(), 2)})

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()
