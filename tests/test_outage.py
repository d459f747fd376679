"""Which database failures the API answers with a retryable 503 (``store/outage.py``): only a
database out of reach. A failure that sending the request again cannot cure stays a 500."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import OperationalError

from trustyard.store.outage import unavailable


def _pg(state: str | None) -> psycopg.Error:
    """The exception psycopg raises for ``state`` (None: no answer from the server)."""
    return psycopg.errors.lookup(state)("postgres said no") if state else psycopg.OperationalError("connection refused")


def _wrapped(orig: BaseException, invalidated: bool = False) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


@pytest.mark.parametrize(("orig", "retryable"), [
    (_pg(None), True),  # refused or reset before the server answered
    (_pg("08006"), True),  # connection failure
    (_pg("57P01"), True),  # the server is shutting down
    (_pg("57P03"), True),  # the server is starting
    (_pg("53100"), False),  # disk full
    (_pg("42703"), False),  # undefined column
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("no such column: spki_sha256"), False),  # a migration not applied
    (sqlite3.OperationalError("database or disk is full"), False),
    (sqlite3.OperationalError("attempt to write a readonly database"), False),
])
def test_only_a_database_out_of_reach_is_retryable(orig: BaseException, retryable: bool) -> None:
    assert unavailable(_wrapped(orig)) is retryable
    try:  # raised from it, as a store method re-raises
        raise RuntimeError("the store failed") from _wrapped(orig)
    except RuntimeError as exc:
        assert unavailable(exc) is retryable


def test_an_invalidated_connection_is_retryable_whatever_the_error() -> None:
    assert unavailable(_wrapped(sqlite3.OperationalError("no such column: x"), invalidated=True))


def test_a_bug_raised_while_handling_a_database_error_is_not_retryable() -> None:
    try:
        try:
            raise _wrapped(_pg("08006"))
        except OperationalError:
            raise ValueError("a bug in the handler")  # noqa: B904 - the point: no deliberate chain
    except ValueError as exc:
        assert not unavailable(exc)
