"""The migration tables (``schema.migrate_boundaries``, ``schema.migrate_journal``) on the
engine's public API. A boundary's state moves by compare-and-set, with its audit entry in the
same transaction; the journal records a step's file writes before the first one is made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ..errors import Code, Conflict, NotFound
from .records import AuditEvent, utc, utc_now
from .schema import migrate_boundaries, migrate_journal
from .sql import SqlStore


@dataclass(frozen=True)
class BoundaryRow:
    id: str
    state: str
    plan: dict[str, Any]
    rank: int
    blocking: str | None
    moved_at: datetime


@dataclass(frozen=True)
class JournalRow:
    seq: int
    boundary_id: str
    step: str
    from_state: str
    status: str
    writes: list[dict[str, Any]]


class MigrateStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def save_plan(self, plans: list[tuple[str, str, dict[str, Any]]], actor: str) -> dict[str, str]:
        """Save (id, spki, plan) in rank order: new boundaries are added, planned ones get the new
        plan, ones already under way keep theirs. Returns id -> added | replanned | kept (STATE)."""
        now = utc_now()
        out: dict[str, str] = {}
        with self.sql.transaction() as conn:
            for rank, (bid, spki, plan) in enumerate(plans):
                row = conn.execute(select(migrate_boundaries.c.state).where(migrate_boundaries.c.id == bid)).first()
                doc = json.dumps(plan, sort_keys=True)
                if row is None:
                    conn.execute(insert(migrate_boundaries).values(id=bid, spki_sha256=spki, state="planned", plan=doc,
                                                                   rank=rank, created_at=now, moved_at=now))
                    out[bid] = "added"
                elif row.state == "planned":
                    conn.execute(update(migrate_boundaries).where(migrate_boundaries.c.id == bid)
                                 .values(plan=doc, rank=rank, blocking=None))
                    out[bid] = "replanned"
                else:
                    out[bid] = f"kept ({row.state})"
            self.sql.append_audit(conn, AuditEvent(actor, "migrate.plan", "migrate", "ok", {"boundaries": out}))
        return out

    def resolve(self, text: str) -> BoundaryRow:
        """A boundary by its id or a unique prefix of it."""
        wanted = text.strip().lower()
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(migrate_boundaries).where(migrate_boundaries.c.id.startswith(wanted))).fetchall()
        if not wanted or not rows:
            raise NotFound(f"no boundary {text!r} in the saved plan (see `trustyard migrate status`)")
        if len(rows) > 1:
            raise Conflict(f"{text!r} names {len(rows)} boundaries: give more digits", code=Code.CONFLICT)
        return _boundary(rows[0])

    def get(self, bid: str) -> BoundaryRow:
        with self.sql.transaction(write=False) as conn:
            row = conn.execute(select(migrate_boundaries).where(migrate_boundaries.c.id == bid)).first()
        if row is None:
            raise NotFound(f"no boundary {bid!r} in the saved plan")
        return _boundary(row)

    def all(self) -> list[BoundaryRow]:
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(migrate_boundaries)
                                .order_by(migrate_boundaries.c.rank, migrate_boundaries.c.id)).fetchall()
        return [_boundary(r) for r in rows]

    def move(self, bid: str, from_state: str, to_state: str, event: AuditEvent, journal: int | None = None) -> None:
        """Set the state if it is still ``from_state`` (and mark the step's journal entry done)."""
        with self.sql.transaction() as conn:
            _move(conn, bid, from_state, to_state)
            if journal is not None:
                conn.execute(update(migrate_journal).where(migrate_journal.c.seq == journal)
                             .values(status="done", done_at=utc_now()))
            self.sql.append_audit(conn, event)

    def block(self, bid: str, text: str, event: AuditEvent) -> None:
        with self.sql.transaction() as conn:
            conn.execute(update(migrate_boundaries).where(migrate_boundaries.c.id == bid).values(blocking=text))
            self.sql.append_audit(conn, event)

    # -- the journal ------------------------------------------------------------------------------

    def journal_open(self, bid: str, step: str, from_state: str, writes: list[dict[str, Any]]) -> int:
        with self.sql.transaction() as conn:
            key = conn.execute(insert(migrate_journal).values(
                boundary_id=bid, step=step, from_state=from_state, status="pending", writes="[]",
                created_at=utc_now())).inserted_primary_key
            assert key is not None
            seq = int(key[0])
            filled = [{k: (v.replace("{seq}", str(seq)) if isinstance(v, str) else v) for k, v in w.items()}
                      for w in writes]
            conn.execute(update(migrate_journal).where(migrate_journal.c.seq == seq).values(writes=json.dumps(filled)))
        return seq

    def journal_get(self, seq: int) -> JournalRow:
        with self.sql.transaction(write=False) as conn:
            return _journal(conn.execute(select(migrate_journal).where(migrate_journal.c.seq == seq)).one())

    def journal_mark(self, seq: int, status: str) -> None:
        with self.sql.transaction() as conn:
            conn.execute(update(migrate_journal).where(migrate_journal.c.seq == seq)
                         .values(status=status, done_at=utc_now()))

    def journal(self, bid: str) -> list[JournalRow]:
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(migrate_journal).where(migrate_journal.c.boundary_id == bid)
                                .order_by(migrate_journal.c.seq)).fetchall()
        return [_journal(r) for r in rows]

    def rolled_back(self, bid: str, seq: int, from_state: str, to_state: str, event: AuditEvent) -> None:
        """The journal entry ``seq`` is undone and the boundary is back at ``to_state``."""
        with self.sql.transaction() as conn:
            conn.execute(update(migrate_journal).where(migrate_journal.c.seq == seq)
                         .values(status="rolled_back", done_at=utc_now()))
            _move(conn, bid, from_state, to_state)
            self.sql.append_audit(conn, event)


def _boundary(row: Any) -> BoundaryRow:
    return BoundaryRow(id=row.id, state=row.state, plan=json.loads(row.plan), rank=row.rank, blocking=row.blocking,
                       moved_at=utc(row.moved_at))  # type: ignore[arg-type]


def _journal(row: Any) -> JournalRow:
    return JournalRow(seq=row.seq, boundary_id=row.boundary_id, step=row.step, from_state=row.from_state,
                      status=row.status, writes=json.loads(row.writes))


def _move(conn: Connection, bid: str, from_state: str, to_state: str) -> None:
    """Compare-and-set the boundary's state: a Conflict when another command moved it first."""
    moved = conn.execute(update(migrate_boundaries).where(migrate_boundaries.c.id == bid,
                                                          migrate_boundaries.c.state == from_state)
                         .values(state=to_state, blocking=None, moved_at=utc_now()))
    if moved.rowcount != 1:
        raise Conflict(f"boundary {bid} is no longer {from_state}: another command moved it", code=Code.CONFLICT)
