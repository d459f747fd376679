"""api.acme_routes and CAApp: ACME requests, POSTs included, go through Starlette's
middleware and routing like every other request; the answers keep their wire format."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from trustyard.store.sql import SqlStore

from .conftest import Env


def test_acme_posts_go_through_the_middleware_stack_like_the_rest(env: Env) -> None:
    acme = env.account()
    app = env.http.app
    calls: list[str] = []
    real_stack = app.middleware_stack

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await real_stack(scope, receive, send)

    app.middleware_stack = watched
    order = acme.new_order("direct.internal")
    assert order.status_code == 201, order.text
    assert acme.post(order.json()["authorizations"][0]).status_code == 200
    assert calls == ["/acme/acme/new-order", calls[1]] and calls[1].startswith("/acme/acme/authz/")
    assert env.http.get("/healthz").status_code == 200
    assert env.http.get(acme.directory["newNonce"]).status_code == 204
    assert calls[2:] == ["/healthz", "/acme/acme/new-nonce"]


def test_posts_that_match_no_acme_resource_get_starlettes_answers(env: Env) -> None:
    acme = env.account()
    unknown = acme.post(acme.directory["newOrder"].replace("new-order", "no-such-thing"), {})
    assert unknown.status_code == 404
    wrong_method = env.http.get(acme.directory["newOrder"])
    assert wrong_method.status_code == 405


def test_a_client_gone_before_its_body_arrives_gets_no_answer_and_breaks_nothing(env: Env) -> None:
    acme = env.account()
    app = env.http.app
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b'{"protected"', "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/acme/acme/new-order", "raw_path": b"/acme/acme/new-order", "query_string": b"",
             "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/jose+json")]}
    asyncio.run(app(scope, receive, send))
    assert sent == [] and messages == []
    assert acme.new_order("after.internal").status_code == 201  # the server carries on


def test_acme_answers_carry_the_headers_starlette_would(env: Env) -> None:
    acme = env.account()
    order = acme.new_order("headers.internal")
    assert order.status_code == 201
    assert order.headers["content-type"] == "application/json"
    assert int(order.headers["content-length"]) == len(order.content)
    assert order.headers["location"].startswith("http://testserver/acme/acme/order/")
    assert order.headers["cache-control"] == "no-store" and order.headers["replay-nonce"]
    assert order.headers["link"] == '<http://testserver/acme/acme/directory>;rel="index"'
    refused = acme.post(acme.directory["newOrder"], {"identifiers": []})
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["content-length"]) == len(refused.content) and refused.headers["replay-nonce"]


def test_a_failure_around_the_service_is_logged_and_answered_as_a_problem(
        env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    if not env.authority.store.is_sqlite:
        pytest.skip("the deferred WAL flush is SQLite's")
    acme = env.client()

    def disk_error(self: SqlStore) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(SqlStore, "_flush_wal", disk_error)  # the account's durable write cannot be flushed
    with caplog.at_level(logging.ERROR, logger="trustyard.api"):
        response = acme.register()
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert "Input/output" not in response.text  # details stay in the log
    assert any(r.name == "trustyard.api" and "POST /acme/acme/new-account" in r.getMessage() for r in caplog.records)
