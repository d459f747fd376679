"""store.prepared: a plan reads and writes exactly what SQLAlchemy's execute would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import exc, insert, select

from trustyard.store import acme_store as q
from trustyard.store.acme_store import AcmeStore, NewAuthz
from trustyard.store.prepared import Plan
from trustyard.store.schema import acme_authzs, acme_nonces
from trustyard.store.sql import SqlStore, open_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
    store = open_store(f"sqlite:///{tmp_path / 'ca.db'}")
    yield store
    store.close()


def _order(store: SqlStore) -> tuple[str, str, str]:
    acme = AcmeStore(store)
    account, _ = acme.create_account("acme", "thumb", "{}", ["mailto:a@b.internal"], None)
    order, authzs = acme.create_order(account.id, "acme", [("dns", "a.internal"), ("dns", "*.b.internal")],
                                      [NewAuthz("dns", "a.internal", False, ("http-01", "dns-01")),
                                       NewAuthz("dns", "b.internal", True, ("dns-01",))],
                                      timedelta(hours=1), None)
    challenge = acme.get_authz(authzs[0].id)[1][0]  # type: ignore[index]
    acme.start_challenge(challenge.id)
    return order.id, authzs[0].id, challenge.id


@pytest.mark.parametrize("statement, key, has_times", [
    (q._GET_ORDER_WITH_AUTHZS, 0, True), (q._GET_AUTHZ, 1, True), (q._GET_CHALLENGE, 2, True),
    (q._CHALLENGE_PARENTS, 2, False),
])
def test_rows_equal_sqlalchemys_own(sqlite_store: SqlStore, statement: object, key: int, has_times: bool) -> None:
    ids = _order(sqlite_store)
    with sqlite_store.transaction(write=False) as conn:
        expected = conn.execute(statement, {"b_id": ids[key]}).fetchall()  # type: ignore[call-overload]
        planned = sqlite_store.run(conn, statement, {"b_id": ids[key]}).fetchall()
    assert expected and [tuple(r) for r in planned] == [tuple(r) for r in expected]
    assert list(planned[0]._fields) == list(expected[0]._fields)
    # datetimes come back as SQLAlchemy makes them (timezone-naive on SQLite), not as stored text
    assert any(isinstance(v, datetime) for v in planned[0]) == has_times
    assert not any(isinstance(v, str) and v.startswith("20") for v in planned[0])


def test_writes_store_the_same_text_as_sqlalchemy(sqlite_store: SqlStore, tmp_path: Path) -> None:
    at = datetime(2026, 11, 27, 4, 5, 6, 789, tzinfo=UTC)
    with sqlite_store.transaction() as conn:
        conn.execute(insert(acme_nonces), {"nonce": "by-sqlalchemy", "expires_at": at, "retry": 1})
        sqlite_store.run(conn, q._INSERT_NONCE, {"nonce": "by-plan", "expires_at": at, "retry": 1})
    raw = sqlite3.connect(tmp_path / "ca.db")
    rows = dict((n, (e, r)) for n, e, r in raw.execute("SELECT nonce, expires_at, retry FROM acme_nonces"))
    raw.close()
    assert rows["by-plan"] == rows["by-sqlalchemy"] == ("2026-11-27 04:05:06.000789", 1)


def test_literal_values_and_executemany(sqlite_store: SqlStore) -> None:
    order_id, authz_id, _ = _order(sqlite_store)
    with sqlite_store.transaction() as conn:
        # _FINISH_AUTHZ carries the literal 'pending' in its WHERE clause: a valid authz is left alone
        assert sqlite_store.run(conn, q._FINISH_AUTHZ, {"b_id": authz_id, "b_status": "valid"}).rowcount == 1
        assert sqlite_store.run(conn, q._FINISH_AUTHZ, {"b_id": authz_id, "b_status": "invalid"}).rowcount == 0
        rows = [{"id": f"x{i}", "order_id": order_id, "account_id": "a", "type": "dns", "value": f"{i}.internal",
                 "wildcard": 0, "status": "pending", "expires_at": datetime.now(UTC)} for i in range(3)]
        sqlite_store.run(conn, q._INSERT_AUTHZ, rows)
        values = {r.value for r in conn.execute(select(acme_authzs.c.value)
                                                .where(acme_authzs.c.order_id == order_id))}
        status = conn.execute(select(acme_authzs.c.status).where(acme_authzs.c.id == authz_id)).scalar_one()
    assert {"0.internal", "1.internal", "2.internal", "a.internal"} <= values
    assert status == "valid"


def test_driver_errors_come_out_as_sqlalchemy_exceptions(sqlite_store: SqlStore) -> None:
    row = {"nonce": "twice", "expires_at": datetime.now(UTC), "retry": 0}
    with sqlite_store.transaction() as conn:
        sqlite_store.run(conn, q._INSERT_NONCE, row)
        with pytest.raises(exc.IntegrityError):
            sqlite_store.run(conn, q._INSERT_NONCE, row)
        with pytest.raises(exc.NoResultFound):
            sqlite_store.run(conn, q._CHALLENGE_PARENTS, {"b_id": "none"}).one()


def test_a_plan_never_runs_outside_a_transaction(sqlite_store: SqlStore) -> None:
    with sqlite_store.engine.connect() as conn:
        with pytest.raises(RuntimeError, match="inside a transaction"):
            sqlite_store.run(conn, q._INSERT_NONCE, {"nonce": "n", "expires_at": datetime.now(UTC),
                                                     "retry": 0})
        conn.rollback()
    with sqlite_store.transaction(write=False) as conn:
        assert conn.execute(select(acme_nonces).where(acme_nonces.c.nonce == "n")).first() is None


def test_statements_expanded_at_execution_are_not_planned(sqlite_store: SqlStore) -> None:
    statement = select(acme_authzs.c.id).where(acme_authzs.c.value.in_(["a", "b"]))
    with pytest.raises(ValueError, match="expanded"):
        Plan(statement, sqlite_store.engine.dialect, [])


def test_a_missing_value_is_an_error_not_a_null(sqlite_store: SqlStore) -> None:
    _, _, challenge_id = _order(sqlite_store)
    with sqlite_store.transaction() as conn:
        with pytest.raises(exc.InvalidRequestError, match="b_error"):  # as conn.execute says it
            sqlite_store.run(conn, q._FINISH_CHALLENGE, {"b_id": challenge_id, "b_status": "valid",
                                                         "b_validated_at": None})
        rows = [{"nonce": "a", "expires_at": datetime.now(UTC), "retry": 0}, {"nonce": "b", "retry": 0}]
        with pytest.raises(exc.InvalidRequestError, match="expires_at"):
            sqlite_store.run(conn, q._INSERT_NONCE, rows)
    with sqlite_store.transaction(write=False) as conn:
        status = conn.execute(select(q.acme_challenges.c.status)
                              .where(q.acme_challenges.c.id == challenge_id)).scalar_one()
    assert status == "processing"
