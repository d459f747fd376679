"""SqlStore: SQLite (WAL) by default, PostgreSQL (psycopg 3) by URL, through SQLAlchemy Core.

Write transactions are serialized where they must be. On SQLite there is one writer at
a time across all worker processes: a write takes a thread lock and an ``flock`` on
``<db>.lock`` (so waiters queue and wake at once instead of SQLite's sleep-and-retry
busy handler) and then ``BEGIN IMMEDIATE``; reads use plain ``BEGIN`` and never block
on writers (WAL). On PostgreSQL the audit head row is locked ``FOR UPDATE`` so the
hash chain stays linear while other writes run concurrently.

With an ``AuditSeal`` (the home's audit key) entries are keyed, and each commit that
appended one updates the signed checkpoint afterwards (after the WAL flush on SQLite).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, bindparam, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from ..errors import Conflict, Forbidden, NotFound, Unauthorized
from . import audit as chain
from .prepared import Plan, PlanResult
from .records import AuditEntry, AuditEvent, CertRecord, Intent
from .schema import audit_head, audit_log, certificates, used_tokens
from .seal import AuditSeal


_DEFERRED: ContextVar[list[Callable[[], None]] | None] = ContextVar("trustyard_deferred_flush", default=None)


class _Unit:
    """The open transaction of ``SqlStore.unit``, which the store's nested ``_tx`` calls join."""

    def __init__(self, store: SqlStore, conn: Connection) -> None:
        self.store, self.conn, self.durable = store, conn, False
        self.thread = threading.get_ident()  # only this thread joins (a copied context does not)
        self.open = True  # a task that copied the context outlives the unit: it must not join


_UNIT: ContextVar[_Unit | None] = ContextVar("trustyard_unit", default=None)

# conn.info key: the (seq, hash) this transaction appended last, for the checkpoint after COMMIT
_TIP = "trustyard_audit_tip"

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


def superseded(serial: str, by: str) -> Conflict:
    """The refusal of a second renewal of ``serial``, which ``by`` already renewed."""
    return Conflict(f"certificate {serial} was already renewed (by {by}): a certificate renews once; renew "
                    "the newer certificate, or bootstrap again with a new token", code="superseded",
                    superseded_by=by)


class SerialCollision(Exception):
    """The random serial is already reserved (astronomically rare): draw another."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; everything else is passed to SQLAlchemy."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class SqlStore:
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
    def _tx(self, write: bool = True, durable: bool = True, one_statement: bool = False) -> Iterator[Connection]:
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
            try:
                yield unit.conn
            except BaseException:
                raw.execute("ROLLBACK TO trustyard_step")
                raw.execute("RELEASE trustyard_step")
                unit.conn.info[_TIP] = tip  # the rolled-back step's entry is gone
                raise
            raw.execute("RELEASE trustyard_step")
            return
        with self._transaction(write) as conn:
            try:
                yield conn
            finally:
                tip = conn.info.pop(_TIP, None)
        if write and (durable or tip) and self._lock_path is not None:
            self._flush_or_defer()
        if tip:
            self._checkpoint_or_defer(tip)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        """BEGIN (IMMEDIATE for a write) on a connection; a SQLite write holds the write lock
        (this process's thread lock, then the ``flock`` shared with other processes) until
        its COMMIT."""
        with self._write_lock() if write and self._lock_path is not None else nullcontext():
            with self._connection() as conn:
                conn.info["immediate"] = write
                with conn.begin():
                    yield conn

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        with self._thread_lock:
            fd = self._lock_file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

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
        """One SQLite write transaction for a whole request: every ``_tx`` of this store inside
        the block (in this thread or task) joins it instead of starting its own, and it commits
        once at the end (rolled back if the block raises). A durable write inside makes the
        commit durable (flushed, or deferred under ``deferred_flush``).

        The ACME server wraps each POST in one: authentication, nonce redemption, the
        resource and the fresh nonce cost one BEGIN IMMEDIATE and one COMMIT, not four. Other
        writers (another worker process, a CLI command) queue on the write lock meanwhile,
        so keep the block short and free of network I/O. On PostgreSQL it changes nothing:
        every ``_tx`` stays its own transaction.
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
        if unit.durable or tip:
            self._flush_or_defer()
        if tip:
            self._checkpoint_or_defer(tip)

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

    def _flush_wal(self) -> None:
        assert self._lock_path is not None
        try:
            fd = os.open(self._lock_path[: -len(".lock")] + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: the frames are in the synced database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _lock_file(self) -> int:
        if self._lock_fd is None or self._lock_pid != _pid:  # a forked child needs its own
            assert self._lock_path is not None
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_pid = _pid
        return self._lock_fd

    def _make_engine(self) -> Engine:
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
            # NORMAL: no flush inside the commit; SqlStore._tx flushes the WAL after the
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
        with self._tx() as conn:
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
        self._drop_kept()
        self.engine.dispose()
        if self._lock_fd is not None and self._lock_pid == _pid:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- issuance ---------------------------------------------------------------------------

    def record_intent(self, intent: Intent) -> None:
        """Reserve the serial, redeem the token (if any) and claim the renewed certificate (if
        any) in one transaction: of two renewals of one certificate, only one gets this far."""
        alone = intent.token_jti is None and intent.renewed_from is None
        with self._tx(durable=False, one_statement=alone) as conn:
            if intent.token_jti is not None:
                try:
                    self._redeem(conn, intent.token_jti, "bootstrap", intent.token_expires_at or intent.not_after)
                except IntegrityError:
                    raise Unauthorized("this token was already used: bootstrap tokens are single-use",
                                       code="tokenReplayed") from None
            try:
                self.run(conn, _INSERT_INTENT, dict(
                    serial=intent.serial, provisioner=intent.provisioner, subject=intent.subject,
                    sans=json.dumps(list(intent.sans)), status="pending", requested_at=intent.requested_at,
                    not_before=intent.not_before, not_after=intent.not_after, renewed_from=intent.renewed_from,
                    token_jti=intent.token_jti,
                ))
            except IntegrityError:
                raise SerialCollision(intent.serial) from None
            if intent.renewed_from is not None:
                self._claim_renewal(conn, intent.renewed_from, intent.serial)

    def _claim_renewal(self, conn: Connection, parent: str, child: str) -> None:
        """Mark ``parent`` superseded by ``child``; refused unless it is issued and not yet renewed."""
        if self.run(conn, _CLAIM, {"serial_": parent, "b_child": child}).rowcount == 1:
            return
        row = self.run(conn, _GET, {"serial_": parent}).first()
        if row is None:
            raise NotFound(f"no certificate with serial {parent}")
        if row.status == "revoked":
            raise Forbidden(f"certificate {parent} is revoked and can never be renewed", code="revoked")
        if row.superseded_by is not None:
            raise superseded(parent, row.superseded_by)
        raise Conflict(f"certificate {parent} is {row.status}, not issued", code="conflict")

    def renewal_of(self, serial: str) -> CertRecord | None:
        """The certificate that renewed ``serial`` (its ``superseded_by``), if any."""
        with self._tx(write=False) as conn:
            row = self.run(conn, _GET, {"serial_": serial}).first()
            child = self.run(conn, _GET, {"serial_": row.superseded_by}).first() if row and row.superseded_by else None
        return _record(child) if child else None

    def use_token(self, jti: str, kind: str, expires_at: datetime) -> None:
        """Redeem a one-time credential (a renewal or revocation proof) on its own."""
        try:
            with self._tx(durable=False) as conn:
                self._redeem(conn, jti, kind, expires_at)
        except IntegrityError:
            raise Unauthorized(f"this {kind} proof was already used", code="tokenReplayed") from None

    def _redeem(self, conn: Connection, jti: str, kind: str, expires_at: datetime) -> None:
        self.run(conn, _INSERT_TOKEN, {"jti": jti, "kind": kind, "used_at": _now(), "expires_at": expires_at})

    def record_issued(self, serial: str, der: bytes, fingerprint: str, event_: AuditEvent) -> bool:
        """Store the signed certificate (before anyone receives it) and audit it, atomically.

        False when it was revoked while being signed (a key-compromise revocation of the
        certificate it renews): it is stored, stays revoked, and must not be handed out."""
        params = {"serial_": serial, "b_der": der, "b_fingerprint": fingerprint}
        with self._tx() as conn:
            issued = self.run(conn, _MARK_ISSUED, params).rowcount == 1
            if not issued:
                self.run(conn, _STORE_DER, params)
                event_ = replace(event_, outcome="denied", detail={**event_.detail, "revoked_while_signing": True})
            self._append(conn, event_)
        return issued

    def record_failed(self, serial: str) -> None:
        """The signing failed: the serial is spent, and the certificate it renews may renew again."""
        with self._tx() as conn:
            conn.execute(update(certificates).where(certificates.c.serial == serial).values(status="failed"))
            conn.execute(update(certificates).where(certificates.c.superseded_by == serial).values(superseded_by=None))

    def revoke(self, serial: str, reason: str, event_: AuditEvent, cascade: bool = False) -> CertRecord:
        """Revoke ``serial``; with ``cascade`` also every certificate renewed from it, transitively,
        in the same transaction and under the same audit entry (its ``descendants`` list).

        A certificate already revoked for another reason may be revoked again with ``cascade``
        (RFC 5280 lets a reason become keyCompromise): otherwise whoever revoked it first, the
        key holder included, would keep its renewals out of reach."""
        now = _now()
        with self._tx() as conn:
            result = conn.execute(
                update(certificates)
                .where(certificates.c.serial == serial, certificates.c.status == "issued")
                .values(status="revoked", revoked_at=now, revocation_reason=reason)
            )
            if result.rowcount != 1:
                row = conn.execute(select(certificates).where(certificates.c.serial == serial)).first()
                if row is None:
                    raise NotFound(f"no certificate with serial {serial}")
                if not (cascade and row.status == "revoked" and row.revocation_reason != reason):
                    raise Conflict(f"certificate {serial} is {row.status}, not issued", code="alreadyRevoked"
                                   if row.status == "revoked" else "conflict")
                conn.execute(update(certificates).where(certificates.c.serial == serial)
                             .values(revocation_reason=reason))
            if cascade:
                descendants = self._revoke_descendants(conn, serial, reason, now)
                event_ = replace(event_, detail={**event_.detail, "descendants": descendants})
            self._append(conn, event_)
            row = conn.execute(select(certificates).where(certificates.c.serial == serial)).one()
        return _record(row)

    def _revoke_descendants(self, conn: Connection, serial: str, reason: str, now: datetime) -> list[str]:
        """Revoke every issued or still-signing certificate renewed from ``serial``, at any depth;
        the serials revoked, generation by generation."""
        revoked: list[str] = []
        seen, frontier = {serial}, [serial]
        while frontier:
            rows = conn.execute(select(certificates.c.serial, certificates.c.status)
                                .where(certificates.c.renewed_from.in_(frontier))
                                .order_by(certificates.c.requested_at, certificates.c.serial)).fetchall()
            frontier = [r.serial for r in rows if r.serial not in seen]
            seen.update(frontier)
            live = [r.serial for r in rows if r.status in ("issued", "pending") and r.serial in frontier]
            if live:
                conn.execute(update(certificates)
                             .where(certificates.c.serial.in_(live), certificates.c.status.in_(("issued", "pending")))
                             .values(status="revoked", revoked_at=now, revocation_reason=reason))
                revoked += live
        return revoked

    # -- reads ------------------------------------------------------------------------------

    def get(self, serial: str) -> CertRecord | None:
        with self._tx(write=False) as conn:
            row = self.run(conn, _GET, {"serial_": serial}).first()
        return _record(row) if row else None

    def list(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[CertRecord]:
        query = select(certificates).order_by(certificates.c.requested_at, certificates.c.serial)
        if status:
            query = query.where(certificates.c.status == status)
        with self._tx(write=False) as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._tx(write=False) as conn:
            rows = conn.execute(select(certificates.c.status, func.count()).group_by(certificates.c.status))
            return {status: n for status, n in rows}

    # -- audit ------------------------------------------------------------------------------

    def audit(self, event_: AuditEvent) -> None:
        with self._tx() as conn:
            self._append(conn, event_)

    def _append(self, conn: Connection, event_: AuditEvent) -> None:
        query = _HEAD if self.is_sqlite else _HEAD_FOR_UPDATE
        head = self.run(conn, query).first()
        if head is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(audit_head).values(id=1, seq=0, hash=chain.GENESIS))
            except IntegrityError:
                pass  # another replica created it first
            head = self.run(conn, query).one()
        key = self.seal.ensure(head.seq, head.hash)[0] if self.seal is not None else None
        seq, at = head.seq + 1, _now()
        row = chain.stored(event_.actor, event_.action, event_.target, event_.outcome, event_.detail)
        digest = chain.entry_hash(head.hash, seq, at, row.actor, row.action, row.target, row.outcome, row.detail, key)
        self.run(conn, _INSERT_AUDIT, dict(
            seq=seq, at=at, actor=row.actor, action=row.action, target=row.target, outcome=row.outcome,
            detail=row.detail_text, prev_hash=head.hash, hash=digest,
        ))
        self.run(conn, _MOVE_HEAD, {"b_seq": seq, "b_hash": digest})
        conn.info[_TIP] = (seq, digest)

    def audit_entries(self, since: int = 0, limit: int | None = None) -> Iterator[AuditEntry]:
        query = select(audit_log).where(audit_log.c.seq > since).order_by(audit_log.c.seq)
        if limit:
            query = query.limit(limit)
        with self._tx(write=False) as conn:
            rows = conn.execute(query).fetchall()
        return map(_entry, rows)

    def verify_audit(self) -> chain.ChainReport:
        """The chain, the head row and, with the seal, every keyed hash and the signed checkpoint
        (read first: it may lag the log, never lead it). Head and entries come from one snapshot,
        so appends running meanwhile raise no false alarm."""
        loaded = self.seal.load() if self.seal is not None else None
        checkpoint, why = self.seal.read_checkpoint() if self.seal is not None else (None, None)
        with self._snapshot() as conn:
            head = conn.execute(_HEAD).first()
            rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).fetchall()
        key, keyed_from = loaded if loaded is not None else (None, 1)
        return chain.verify_chain(map(_entry, rows), (head.seq, head.hash) if head else None, key, keyed_from,
                                  checkpoint, why)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        if self.is_sqlite:  # a WAL read transaction is a snapshot
            with self._tx(write=False) as conn:
                yield conn
            return
        with self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn


# Statements built once: SQLAlchemy then only binds parameters on the hot path.
_INSERT_INTENT = insert(certificates)
_INSERT_TOKEN = insert(used_tokens)
_INSERT_AUDIT = insert(audit_log)
_GET = select(certificates).where(certificates.c.serial == bindparam("serial_"))
_MARK_ISSUED = (update(certificates)
                .where(certificates.c.serial == bindparam("serial_"), certificates.c.status == "pending")
                .values(status="issued", der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fingerprint")))
_STORE_DER = (update(certificates).where(certificates.c.serial == bindparam("serial_"))
              .values(der=bindparam("b_der"), fingerprint_sha256=bindparam("b_fingerprint")))
_CLAIM = (update(certificates)
          .where(certificates.c.serial == bindparam("serial_"), certificates.c.status == "issued",
                 certificates.c.superseded_by.is_(None))
          .values(superseded_by=bindparam("b_child")))
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1).values(seq=bindparam("b_seq"), hash=bindparam("b_hash"))


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(seq=row.seq, at=_utc(row.at), actor=row.actor, action=row.action,  # type: ignore[arg-type]
                      target=row.target, outcome=row.outcome, detail=json.loads(row.detail),
                      prev_hash=row.prev_hash, hash=row.hash)


def _record(row: Any) -> CertRecord:
    return CertRecord(
        serial=row.serial, provisioner=row.provisioner, subject=row.subject, sans=tuple(json.loads(row.sans)),
        status=row.status, not_before=_utc(row.not_before), not_after=_utc(row.not_after),  # type: ignore[arg-type]
        requested_at=_utc(row.requested_at), der=row.der, fingerprint_sha256=row.fingerprint_sha256,  # type: ignore[arg-type]
        renewed_from=row.renewed_from, revoked_at=_utc(row.revoked_at), revocation_reason=row.revocation_reason,
        superseded_by=row.superseded_by,
    )


def open_store(url: str, migrate: bool = True, seal: AuditSeal | None = None) -> SqlStore:
    store = SqlStore(url, seal)
    if migrate:
        store.migrate()
    return store
