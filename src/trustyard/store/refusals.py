"""Unauthenticated refusals, audited in aggregate (table ``refusals``, migration 0003).

A request that never authenticated (a bad token, proof or JWS, an unknown account, a spent
nonce) is not worth an audit entry each: anyone can send millions. Each is counted instead,
in one row per interval, source and reason; a flood moves counters. Sources are client
addresses, IPv6 ones by /64 (one host holds a whole /64), so rotating addresses within one's
own prefix adds no rows either.
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from .engine import Database
from .records import AuditEvent, utc
from .schema import refusals

INTERVAL = timedelta(hours=1)
RETENTION = timedelta(days=90)


@functools.lru_cache(maxsize=4096)
def source_key(host: str | None) -> str:
    """A client address as refusals and nonces are counted: IPv4 as is, IPv6 by its /64.

    Cached: every ACME request asks (for its nonce's owner), and parsing the address costs
    more than the rest of its routing; a pure function of the address text."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host[:64]
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


def note(sql: Database, source: str, reason: str, now: datetime | None = None, message: str = "") -> None:
    """Count one refusal of ``source`` for ``reason`` (``ACTION:CODE``) in the current interval's
    row. The store's observers hear of it as a ``request.deny`` event with outcome ``counted``
    (``message``, what the caller was told, goes only to them: it is not stored)."""
    now = now or datetime.now(UTC)
    step = int(INTERVAL.total_seconds())
    start = datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)
    values = {"interval_start": start, "source": source[:64], "reason": reason[:96], "count": 1, "last_at": now}
    from sqlalchemy.dialects import postgresql, sqlite  # here: importing both costs every command ~30 ms

    dialect = sqlite if sql.is_sqlite else postgresql
    statement = dialect.insert(refusals).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["interval_start", "source", "reason"],
        set_={"count": refusals.c["count"] + 1, "last_at": statement.excluded.last_at})
    with sql.transaction(durable=False, one_statement=True) as conn:
        conn.execute(statement)
        if sql.observers:
            action, _, code = reason.rpartition(":")
            sql.recorded(conn, AuditEvent(actor=source, action="request.deny", target=action or reason,
                                          outcome="counted", detail={"code": code, "reason": message}))


def rows(sql: Database, since: datetime | None = None) -> list[dict[str, Any]]:
    """The counted refusals, oldest interval first."""
    query = select(refusals).order_by(refusals.c.interval_start, refusals.c.source, refusals.c.reason)
    if since is not None:
        query = query.where(refusals.c.interval_start >= since)
    with sql.transaction(write=False) as conn:
        found = conn.execute(query).fetchall()
    return [{"interval_start": utc(r.interval_start), "source": r.source, "reason": r.reason, "count": r.count,
             "last_at": utc(r.last_at)} for r in found]


def purge(sql: Database, now: datetime | None = None) -> int:
    """Drop the counts of intervals older than ``RETENTION``; the number of rows deleted."""
    cutoff = (now or datetime.now(UTC)) - RETENTION
    with sql.transaction(durable=False) as conn:
        return conn.execute(delete(refusals).where(refusals.c.interval_start < cutoff)).rowcount
