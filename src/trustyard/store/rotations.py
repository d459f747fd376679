"""The rotations table (``schema.rotations``) and the ledger count a rotation's retiring gate
needs, on the engine's public API. Every state change is a compare-and-set on the state the
caller saw, appended to the audit log in the same transaction: of two processes advancing one
rotation, one wins and the other is told the state moved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update

from ..errors import Code, Conflict
from .records import AuditEvent, utc
from .schema import certificates, rotations
from .sql import SqlStore

STATE_TIMES = ("prepared", "published", "adopted", "active", "retiring", "retired", "rolled_back")
"""The states with a ``<state>_at`` column: when the rotation entered it."""


@dataclass(frozen=True)
class RotationRow:
    id: int
    kind: str
    state: str
    created_at: datetime
    entered: dict[str, datetime | None]
    deadline_at: datetime | None
    bundle_version: int | None
    old_intermediate_sha256: str
    old_root_sha256: str
    new_intermediate_sha256: str | None
    new_root_sha256: str | None
    cross_sha256: str | None
    paths: dict[str, str] = field(default_factory=dict)
    forced_laggards: tuple[str, ...] = ()

    def at(self, state: str) -> datetime | None:
        return self.entered.get(state)


class RotationStore:
    """Rotations on a ``SqlStore`` (whose audit log records every transition)."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def create(self, values: dict[str, Any], event_: AuditEvent) -> RotationRow:
        """A new rotation, refused (``Conflict``) while another is unfinished: checked and inserted
        in one write transaction."""
        with self.sql.transaction() as conn:
            if not self.sql.is_sqlite:  # replicas: one check-and-insert at a time (SQLite has one writer)
                conn.execute(text("SELECT pg_advisory_xact_lock(7340033)"))
            busy = conn.execute(select(rotations.c.id, rotations.c.state)
                                .where(rotations.c.state.notin_(("retired", "rolled_back")))).first()
            if busy is not None:
                raise Conflict(f"rotation {busy.id} is {busy.state}: finish or roll it back first",
                               code=Code.ROTATION_IN_PROGRESS, rotation=busy.id)
            row_values = {**values, "paths": json.dumps(values.get("paths", {})),
                          "forced_laggards": json.dumps(list(values.get("forced_laggards", ())))}
            key = conn.execute(insert(rotations).values(**row_values)).inserted_primary_key
            assert key is not None
            new_id = key[0]
            self.sql.append_audit(conn, AuditEvent(event_.actor, event_.action, f"rotation/{new_id}",
                                              event_.outcome, event_.detail))
            row = conn.execute(select(rotations).where(rotations.c.id == new_id)).one()
        return _row(row)

    def move(self, rotation_id: int, from_state: str, values: dict[str, Any], event_: AuditEvent) -> RotationRow:
        """Set ``values`` (a new ``state`` among them) if the rotation is still in ``from_state``."""
        if "forced_laggards" in values:
            values = {**values, "forced_laggards": json.dumps(list(values["forced_laggards"]))}
        if "paths" in values:
            values = {**values, "paths": json.dumps(values["paths"])}
        with self.sql.transaction() as conn:
            moved = conn.execute(update(rotations).where(rotations.c.id == rotation_id,
                                                         rotations.c.state == from_state).values(**values))
            if moved.rowcount != 1:
                raise Conflict(f"rotation {rotation_id} is no longer {from_state}: someone else moved it",
                               code=Code.ROTATION_MOVED, rotation=rotation_id)
            self.sql.append_audit(conn, event_)
            row = conn.execute(select(rotations).where(rotations.c.id == rotation_id)).one()
        return _row(row)

    def get(self, rotation_id: int) -> RotationRow | None:
        with self.sql.transaction(write=False) as conn:
            row = conn.execute(select(rotations).where(rotations.c.id == rotation_id)).first()
        return _row(row) if row else None

    def all(self) -> list[RotationRow]:
        with self.sql.transaction(write=False) as conn:
            rows = conn.execute(select(rotations).order_by(rotations.c.id)).fetchall()
        return [_row(r) for r in rows]

    def unfinished(self) -> RotationRow | None:
        """The rotation in progress (at most one), if any."""
        with self.sql.transaction(write=False) as conn:
            row = conn.execute(select(rotations).where(rotations.c.state.notin_(("retired", "rolled_back")))
                               .order_by(rotations.c.id.desc())).first()
        return _row(row) if row else None

    def issuing_token(self) -> tuple[int, str] | None:
        """(id, state) of the newest rotation whose material issues (active, retiring, retired):
        one indexed query, cheap enough to poll every few seconds from every worker."""
        with self.sql.transaction(write=False) as conn:
            row = conn.execute(select(rotations.c.id, rotations.c.state)
                               .where(rotations.c.state.in_(("active", "retiring", "retired")))
                               .order_by(rotations.c.id.desc())).first()
        return (row.id, row.state) if row else None

    def still_vouched(self, issuer_sha256: str, now: datetime, legacy_issuer: Any = None) -> int:
        """How many certificates ``vouched_serials`` finds."""
        return len(self.vouched_serials(issuer_sha256, now, legacy_issuer))

    def vouched_serials(self, issuer_sha256: str, now: datetime, legacy_issuer: Any = None) -> set[str]:
        """Serials of the certificates signed by ``issuer_sha256`` that are issued, unexpired and
        not replaced by a renewal. Rows from before the issuer column (``issuer_sha256`` empty)
        count when ``legacy_issuer(der)`` says they were signed by that CA."""
        live = (certificates.c.status == "issued", certificates.c.not_after > now,
                certificates.c.superseded_by.is_(None))
        with self.sql.transaction(write=False) as conn:
            serials = {r.serial for r in conn.execute(select(certificates.c.serial).where(
                certificates.c.issuer_sha256 == issuer_sha256, *live))}
            if legacy_issuer is not None:
                rows = conn.execute(select(certificates.c.serial, certificates.c.der).where(
                    certificates.c.issuer_sha256.is_(None), *live)).fetchall()
                serials.update(r.serial for r in rows if r.der and legacy_issuer(r.der))
        return serials


def _row(row: Any) -> RotationRow:
    return RotationRow(
        id=row.id, kind=row.kind, state=row.state, created_at=utc(row.created_at),  # type: ignore[arg-type]
        entered={state: utc(getattr(row, f"{state}_at")) for state in STATE_TIMES},
        deadline_at=utc(row.deadline_at), bundle_version=row.bundle_version,
        old_intermediate_sha256=row.old_intermediate_sha256, old_root_sha256=row.old_root_sha256,
        new_intermediate_sha256=row.new_intermediate_sha256, new_root_sha256=row.new_root_sha256,
        cross_sha256=row.cross_sha256, paths=json.loads(row.paths or "{}"),
        forced_laggards=tuple(json.loads(row.forced_laggards or "[]")),
    )
