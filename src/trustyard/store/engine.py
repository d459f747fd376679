"""The database engine: transactions, units, savepoints, the durable flush and the write lock.

``Database`` is SQLite (WAL) by default, PostgreSQL (psycopg 3) by URL, through SQLAlchemy
Core. Everything the CA keeps in SQL (the certificate ledger and audit log, ``SqlStore``; the
ACME state, ``AcmeStore``; the refusal counts) runs on its public API:

    transaction(write, durable, one_statement)   a transaction (joins an open ``unit``)
    unit()                                        one write transaction for a whole request
    run(conn, statement, params)                  a prebuilt statement, through a compiled plan on SQLite
    recorded(conn, event) / tell(event)           observers hear of events after COMMIT
    appended(conn, seq, digest)                   the audit tip to checkpoint after COMMIT
    snapshot()                                    a consistent read of several tables
    deferred_flush()                              leave durable WAL flushes to the caller

Write transactions are serialized where they must be. On SQLite there is one writer at
a time across all worker processes: a write takes a thread lock and an ``flock`` on
``<db>.lock`` (so waiters queue and wake at once instead of SQLite's sleep-and-retry
busy handler) and then ``BEGIN IMMEDIATE``; an operation on the event loop
(``loopwait.run_suspendable``) that finds the lock taken lets its loop serve other
requests until it is free, instead of blocking the worker; reads use plain ``BEGIN`` and never block
on writers (WAL). On PostgreSQL the audit head row is locked ``FOR UPDATE`` so the
hash chain stays linear while other writes run concurrently.

With an ``AuditSeal`` (the home's audit key) entries are keyed, and each commit that
appended one updates the signed checkpoint afterwards (after the WAL flush on SQLite).

``observers`` are told of every audit entry, and of every refusal counted in aggregate
(``refusals.note``), once its transaction has committed, exactly once, in commit order; what a
rolled-back transaction or SAVEPOINT recorded is never told. The CA's operations log
(``ca.oplog``) is one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as SaEngine
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from ..files import fsync_if_present
from .loopwait import Waiters, can_suspend, suspend, until_free, until_released
from .prepared import Plan, PlanResult
from .records import AuditEvent
from .schema import certificates
from .seal import AuditSeal

# SQLite checkpoints the WAL by itself inside the COMMIT that takes it past 1000 pages: on
# whatever thread committed (the event loop), with an fsync of the WAL and one of the database.
# Connections here turn that off; every CHECKPOINT_EVERY write commits of a process, a passive
# checkpoint (it blocks no reader or writer) runs in a thread of its own instead.
CHECKPOINT_EVERY = 256

_DEFERRED: ContextVar[list[Callable[[], None]] | None] = ContextVar("trustyard_deferred_flush", default=None)


class _Unit:
    """The open transaction of ``Database.unit``, which this database's nested ``transaction`` calls join."""

    def __init__(self, store: Database, conn: Connection) -> None:
        self.store, self.conn, self.durable = store, conn, False
        self.thread = threading.get_ident()  # only this thread joins (a copied context does not)
        self.open = True  # a task that copied the context outlives the unit: it must not join


_UNIT: ContextVar[_Unit | None] = ContextVar("trustyard_unit", default=None)

# conn.info key: the (seq, hash) this transaction appended last, for the checkpoint after COMMIT
_TIP = "trustyard_audit_tip"
# conn.info key: the events this transaction recorded, for the observers after COMMIT
_EVENTS = "trustyard_recorded_events"

Observer = Callable[[AuditEvent], None]

# This process's id, kept current across fork: connections and lock files are per process,
# and asking the kernel on every transaction costs more than the check is worth.
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def deferred_flush() -> Iterator[list[Callable[[], None]]]:
    """Within this block, a durable SQLite write leaves its WAL flush to the caller: it appends
    the flush to the yielded list, and the caller must run every one of them before it tells
    anyone about the write. The API uses this to wait for the disk off the event loop, so a
    worker serves the next request meanwhile."""
    pending: list[Callable[[], None]] = []
    token = _DEFERRED.set(pending)
    try:
        yield pending
    finally:
        _DEFERRED.reset(token)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; everything else is passed to SQLAlchemy."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str, seal: AuditSeal | None = None) -> None:
        self.url = normalize_url(url)
        self.seal = seal  # the audit key and checkpoint; without it entries are plain hashes
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine()
        self._thread_lock = threading.Lock()
        self._lock_path = self._sqlite_lock_path()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._kept: tuple[int, Connection] | None = None  # (pid, the main thread's SQLite connection)
        self._plans: dict[tuple[int, tuple[str, ...]], tuple[Any, Plan]] = {}
        self._commits = 0  # write commits of this process since its last checkpoint
        self._checkpointer: threading.Thread | None = None
        self.observers: list[Observer] = []  # told of each recorded event after its COMMIT
        self._waiters = Waiters()  # this database's operations on an event loop, waiting for the write lock
        self.lock_waits = 0  # times an operation on the event loop found the write lock taken and let the loop run

    def run(self, conn: Connection, statement: Any, params: dict[str, Any] | list[dict[str, Any]] | None = None,
            ) -> PlanResult | Any:
        """Execute one of the store's prebuilt statements in ``conn``'s transaction: on SQLite
        through a ``Plan`` (compiled once per set of parameter names, run on the driver), on
        PostgreSQL by ``Connection.execute``. Either result has ``rowcount``, ``first()``,
        ``one()`` and ``fetchall()``, and rows whose columns are attributes."""
        if not self.is_sqlite:
            return conn.execute(statement, params)
        keys = tuple(params[0] if isinstance(params, list) else params or ())
        entry = self._plans.get((id(statement), keys))
        if entry is None:  # the statement is kept in the entry, so its id stays its own
            entry = self._plans[(id(statement), keys)] = (statement, Plan(statement, self.engine.dialect, keys))
        return entry[1].run(conn, params)

    def _sqlite_lock_path(self) -> str | None:
        database = self.engine.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return f"{database}.lock"

    @contextmanager
    def transaction(self, write: bool = True, durable: bool = True,
                    one_statement: bool = False) -> Iterator[Connection]:
        """A transaction; ``write`` ones are serialized across threads and processes on SQLite.

        Durability on SQLite is a group commit: transactions commit with
        ``synchronous=NORMAL`` (WAL frames written, not yet flushed) under the write lock,
        and a ``durable`` one then fsyncs the WAL file *after* releasing the lock, before the
        caller goes on. Writers no longer wait for each other's disk flushes, and concurrent
        flushes of one file are merged by the kernel. Frames reach the WAL in commit order,
        so one fsync makes every earlier commit durable too; frames already checkpointed
        are in the database file, which SQLite syncs at checkpoint. ``durable=False`` is for
        steps that a durable commit always follows before anything leaves the CA (the
        issuance intent, a proof's redemption).

        Inside ``unit()`` a write joins the unit under a SAVEPOINT, so that a failure rolls
        back exactly its own statements, as its own transaction would; ``one_statement``
        writes skip the SAVEPOINT, since SQLite undoes a failed statement by itself.
        """
        unit = _UNIT.get()
        if unit is not None and unit.open and unit.store is self and unit.thread == threading.get_ident():
            unit.durable = unit.durable or (write and durable)
            if not write or one_statement:
                yield unit.conn
                return
            # SQLite SAVEPOINTs nest by name, so one name serves every level; straight to the
            # driver, like the unit's BEGIN (SQLAlchemy's begin_nested costs ten times more).
            raw = unit.conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("SAVEPOINT trustyard_step")
            tip = unit.conn.info.get(_TIP)
            told = len(unit.conn.info.get(_EVENTS, ()))
            try:
                yield unit.conn
            except BaseException:
                raw.execute("ROLLBACK TO trustyard_step")
                raw.execute("RELEASE trustyard_step")
                unit.conn.info[_TIP] = tip  # the rolled-back step's entry is gone
                del unit.conn.info.get(_EVENTS, [])[told:]  # and its events with it
                raise
            raw.execute("RELEASE trustyard_step")
            return
        with self._transaction(write) as conn:
            try:
                yield conn
            finally:
                tip = conn.info.pop(_TIP, None)
                events = conn.info.pop(_EVENTS, None)
        if write and self._lock_path is not None:
            self._committed()
            if durable or tip:
                self._flush_or_defer()
        if tip:
            self._checkpoint_or_defer(tip)
        if events:
            self._tell(events)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        """BEGIN (IMMEDIATE for a write) on a connection; a SQLite write holds the write lock
        (this process's thread lock, then the ``flock`` shared with other processes) until
        its COMMIT."""
        with (self._write_lock() if write and self._lock_path is not None else nullcontext(),
              self._connection() as conn):
            conn.info["immediate"] = write
            with conn.begin():
                yield conn

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        suspending = can_suspend()
        if suspending:
            fd = self._acquire_without_blocking()
        else:
            self._thread_lock.acquire()
            try:
                fd = self._lock_file()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._thread_lock.release()
            if suspending:
                self._waiters.released()

    def _acquire_without_blocking(self) -> int:
        """The write lock for an operation on the event loop (``loopwait``): taken at once when
        free; else the loop serves other requests until it looks free, and we try again."""
        assert self._lock_path is not None
        path = self._lock_path
        try:
            while True:
                if not self._thread_lock.acquire(blocking=False):
                    self.lock_waits += 1
                    suspend(until_released(self._thread_lock))  # another thread of this process writes
                    continue
                try:
                    fd = self._lock_file()
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:  # another process writes
                    self._thread_lock.release()
                except BaseException:
                    self._thread_lock.release()
                    raise
                self.lock_waits += 1
                self._waiters.wait(lambda: until_free(path))
        except BaseException:
            # Cancelled (or failed) while it may have had the turn: the next queued write of this
            # loop tries instead of waiting for a release that this one will never make.
            self._waiters.released()
            raise

    def _flush_or_defer(self) -> None:
        deferred = _DEFERRED.get()
        if deferred is None:
            self._flush_wal()
        elif self._flush_wal not in deferred:
            deferred.append(self._flush_wal)

    def _checkpoint_or_defer(self, tip: tuple[int, str]) -> None:
        """After the commit (and the flush before it in the deferred list): the signed checkpoint."""
        if self.seal is None:
            return
        self.seal.note(*tip)
        deferred = _DEFERRED.get()
        if deferred is None:
            self.seal.publish()
        elif self.seal.publish not in deferred:
            deferred.append(self.seal.publish)

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One SQLite write transaction for a whole request: every ``transaction`` of this database inside
        the block (in this thread or task) joins it instead of starting its own, and it commits
        once at the end (rolled back if the block raises). A durable write inside makes the
        commit durable (flushed, or deferred under ``deferred_flush``).

        The ACME server wraps each POST in one: authentication, nonce redemption, the
        resource and the fresh nonce cost one BEGIN IMMEDIATE and one COMMIT, not four. Other
        writers (another worker process, a CLI command) queue on the write lock meanwhile,
        so keep the block short and free of network I/O. On PostgreSQL it changes nothing:
        every ``transaction`` stays its own.
        """
        if self._lock_path is None or _UNIT.get() is not None:
            yield
            return
        with self._transaction(write=True) as conn:
            unit = _Unit(self, conn)
            token = _UNIT.set(unit)
            try:
                yield
            finally:
                unit.open = False
                _UNIT.reset(token)
                tip = conn.info.pop(_TIP, None)
                events = conn.info.pop(_EVENTS, None)
        self._committed()
        if unit.durable or tip:
            self._flush_or_defer()
        if tip:
            self._checkpoint_or_defer(tip)
        if events:
            self._tell(events)

    def _kept_connection(self) -> Connection:
        """The main thread's SQLite connection, checked out once and kept: the event loop runs
        there, its transactions are short and frequent, and the pool's checkout and return
        cost as much as a BEGIN. Other threads come and go (thread pools), so they use the
        pool and give their connection back."""
        if self._kept is None or self._kept[0] != _pid or self._kept[1].closed:
            self._kept = (_pid, self.engine.connect())
        return self._kept[1]

    def _drop_kept(self) -> None:
        if self._kept is not None and self._kept[0] == _pid:
            self._kept[1].close()  # back to the pool, whose reset rolls back whatever is open
        self._kept = None

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection for one transaction: on a SQLite file, in the main thread, the kept one
        (unless a transaction of this thread already uses it); else one from the pool."""
        if self._lock_path is not None and threading.current_thread() is threading.main_thread():
            conn = self._kept_connection()
            if not conn.in_transaction():
                try:
                    yield conn
                except BaseException:
                    # A failed statement or COMMIT may leave SQLite's transaction (and its lock)
                    # open under a connection SQLAlchemy considers done: never reuse it.
                    self._drop_kept()
                    raise
                return
        with self.engine.connect() as conn:
            yield conn

    def _committed(self) -> None:
        """A write committed (SQLite file): every CHECKPOINT_EVERY, checkpoint in a thread."""
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and (self._checkpointer is None or not self._checkpointer.is_alive()):
            self._commits = 0
            self._checkpointer = threading.Thread(target=self.checkpoint, name="trustyard-wal-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def checkpoint(self) -> None:
        """Copy the WAL's committed frames into the database file (``PASSIVE``: as far as no
        reader still needs them; SQLite fsyncs the WAL first and the database after), so the
        next writer starts the WAL over. On its own driver connection, outside any transaction."""
        assert self._lock_path is not None
        try:
            raw = self.engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
            finally:
                raw.close()
        except Exception:  # a checkpoint left undone is done by the next one
            logging.getLogger("trustyard.store").exception("the WAL checkpoint failed")

    def _flush_wal(self) -> None:
        assert self._lock_path is not None
        fsync_if_present(self._lock_path[: -len(".lock")] + "-wal")

    def _lock_file(self) -> int:
        if self._lock_fd is None or self._lock_pid != _pid:  # a forked child needs its own
            assert self._lock_path is not None
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_pid = _pid
        return self._lock_fd

    def _make_engine(self) -> SaEngine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_size=8, max_overflow=16, pool_pre_ping=True)
        memory = self.url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            self.url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({"poolclass": StaticPool} if memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA wal_autocheckpoint=0")  # Database.checkpoint, in a thread
            # NORMAL: no flush inside the commit; Database.transaction flushes the WAL after the
            # write lock is released (group commit), before a durable write returns.
            cur.execute("PRAGMA synchronous=NORMAL" if not memory else "PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Straight to the driver: a BEGIN needs none of SQLAlchemy's statement machinery.
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "BEGIN IMMEDIATE" if conn.info.get("immediate", True) else "BEGIN")

        return engine

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe with several replicas)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.transaction() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7340032)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def integrity_check(self) -> list[str]:
        """Problems the database itself reports (SQLite ``PRAGMA integrity_check``)."""
        if not self.is_sqlite:
            with self.engine.connect() as conn:
                conn.execute(select(func.count()).select_from(certificates))
            return []
        with self.engine.connect() as conn:
            rows = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
        return [] if rows == ["ok"] else rows

    def close(self) -> None:
        if self._checkpointer is not None and self._checkpointer.is_alive():
            self._checkpointer.join(10)  # before the pool it uses goes
        self._drop_kept()
        self.engine.dispose()
        if self._lock_fd is not None and self._lock_pid == _pid:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- after COMMIT -------------------------------------------------------------------------

    def appended(self, conn: Connection, seq: int, digest: str) -> None:
        """``conn``'s transaction appended the audit entry ``seq`` with hash ``digest``: once it
        commits, the signed checkpoint moves there (a rolled-back SAVEPOINT takes it back)."""
        conn.info[_TIP] = (seq, digest)

    def recorded(self, conn: Connection, event_: AuditEvent) -> None:
        """Tell the observers of ``event_`` once ``conn``'s transaction commits (not if it rolls back)."""
        if self.observers:
            conn.info.setdefault(_EVENTS, []).append(event_)

    def tell(self, event_: AuditEvent) -> None:
        """Tell the observers of an event that is not recorded (an ACME account's refused request)."""
        self._tell([event_])

    def _tell(self, events: list[AuditEvent]) -> None:
        for event_ in events:
            for observer in self.observers:
                try:
                    observer(event_)
                except Exception:  # an observer's failure is not the transaction's
                    logging.getLogger("trustyard.store").exception("an audit observer failed")

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one state of every table (appends meanwhile stay unseen)."""
        if self.is_sqlite:  # a WAL read transaction is a snapshot
            with self.transaction(write=False) as conn:
                yield conn
            return
        with self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn

