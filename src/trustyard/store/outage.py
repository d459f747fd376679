"""Telling a database that is out of reach (restarting, failing over, a dropped connection)
from every other failure: the server answers the first 503 with Retry-After, since the same
request sent again is safe (a redemption's retry is idempotent, ``store.redemptions``) and
will succeed once the pool has reconnected (``pool_pre_ping``), and the second 500."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

RETRY_AFTER_SECONDS = 1


def unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is the database out of reach."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
