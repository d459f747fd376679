"""A finalize cut by a crash (the order left ``processing``) is released by the intent sweep: the
order becomes ``invalid`` with serverInternal and the client orders again; and a database out
of reach answers 503 with Retry-After, not 500. SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from trustyard.ca.intent_sweep import IntentSweep
from trustyard.ca.retries import PENDING_INTENT_BOUND
from trustyard.store.acme_store import AcmeStore

from .conftest import Env, authorize, issue, poll


def test_a_finalize_cut_by_a_crash_leaves_the_order_invalid_and_the_next_order_works(env: Env) -> None:
    acme = env.account()
    response = acme.new_order("cut.internal")
    order_url = response.headers["Location"]
    authorize(acme, env.srv, response.json())
    assert poll(acme, order_url, ("ready", "invalid"))["status"] == "ready"

    # The finalize began (ready -> processing) and its worker died before it ended.
    assert AcmeStore(env.authority.store).begin_finalize(order_url.rsplit("/", 1)[1])
    assert poll(acme, order_url, ("valid", "invalid"), timeout=0.5)["status"] == "processing"

    store = env.authority.store
    assert IntentSweep(store).tick() == [] and poll(acme, order_url, ("invalid",), 0.1)["status"] == "processing"
    moment = datetime.now(UTC) + PENDING_INTENT_BOUND + timedelta(seconds=1)
    sweep = IntentSweep(store, clock=lambda: moment)
    sweep.tick()
    assert sweep.orders_released == 1
    done = poll(acme, order_url)
    assert done["status"] == "invalid" and done["error"]["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert "place a new order" in done["error"]["detail"] and "certificate" not in done

    order, pem, _key = issue(acme, env.srv, "cut.internal")  # the client orders again
    assert order["status"] == "valid" and "BEGIN CERTIFICATE" in pem


def test_a_database_out_of_reach_answers_503_with_retry_after(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    acme = env.account()

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    monkeypatch.setattr(AcmeStore, "create_order", unreachable)
    refused = acme.post(acme.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "a.internal"}]})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
    assert refused.json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert refused.json()["status"] == 503  # the problem document says what the status line says

    monkeypatch.setattr(env.authority.store, "get", unreachable)
    rest = env.http.get("/v1/certificates/01")
    assert rest.status_code == 503 and rest.headers["Retry-After"] == "1", rest.text
    assert rest.json()["type"] == "urn:trustyard:error:databaseUnavailable"
    monkeypatch.undo()
    assert env.http.get("/v1/certificates/01").status_code == 404  # not a 503 when the database answers
