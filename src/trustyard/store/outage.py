"""Telling a database that is out of reach (restarting, failing over, a dropped connection)
from every other failure: the server answers the first 503 with Retry-After, since the same
request sent again is safe (a redemption's retry is idempotent, ``store.redemptions``) and
will succeed once the pool has reconnected (``pool_pre_ping``), and the second 500.

Only connection-level conditions count: a connection SQLAlchemy invalidated, a PostgreSQL
error of class 08 (connection exception) or 57P01-57P03 (the server shutting down or
starting), a driver error before the server answered (no SQLSTATE: refused, reset), and
SQLite's lock timeouts. A missing column, a full disk or a read-only file will not go away
by sending the request again: those stay 500, with their traceback in the log. Only a
deliberate chain (``raise ... from``) is followed, not an exception raised while handling
another."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

RETRY_AFTER_SECONDS = 1

_SHUTTING_DOWN = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect now
_SQLITE_BUSY = ("database is locked", "database table is locked")


def unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is the database out of reach."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, (OperationalError, InterfaceError)) and _out_of_reach(exc.orig):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def _out_of_reach(orig: BaseException | None) -> bool:
    if isinstance(orig, sqlite3.Error):
        return any(text in str(orig) for text in _SQLITE_BUSY)
    state = getattr(orig, "sqlstate", None)  # psycopg 3
    if state is None:
        return orig is not None  # the driver gave up before the server answered: refused, reset, closed
    return state.startswith("08") or state in _SHUTTING_DOWN
