"""One application for every request: ACME POSTs are routed by the Starlette app, so middleware
added to it and its exception handlers see them, and working out the base URL of a request
leaves the validation guard as it was built."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import ipaddress
import logging
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import josepy as jose
import pytest
import tomli_w
import uvicorn
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustyard.acme import AcmeService
from trustyard.acme.guard import TargetGuard, TargetRefused
from trustyard.api.app import create_app
from trustyard.ca.home import load_authority
from trustyard.testing import free_port
from trustyard.x509.names import parse_name

from ..support import PASSWORD, start_server
from .challtestsrv import ChallTestSrv
from .client import Acme, csr_der
from .conftest import Env, acme_config, poll

ACME_PATH_KINDS = ("new-account", "new-order", "authz", "chall", "finalize", "order", "cert")


class CountByPath:
    """A pure ASGI middleware: counts requests by (method, the path's ACME resource) and the
    status of each answer."""

    def __init__(self, app: ASGIApp, seen: collections.Counter[tuple[str, str]],
                 statuses: list[tuple[str, int]]) -> None:
        self.app, self.seen, self.statuses = app, seen, statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        self.seen[(scope["method"], _kind(path))] += 1

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append((path, message["status"]))
            await send(message)

        await self.app(scope, receive, watched)


def _kind(path: str) -> str:
    """/acme/acme/order/ID/finalize -> finalize; /acme/acme/order/ID -> order."""
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "acme":
        return path
    return parts[-1] if parts[-1] in ("finalize", "orders") or len(parts) == 4 else parts[3]


def _guard(app: Starlette) -> TargetGuard:
    """The validation guard of the ACME service the app routes to."""
    for route in app.routes:
        routes = getattr(getattr(route, "endpoint", None), "routes", None)
        if routes is not None:
            return routes.service.va.checker.guard  # type: ignore[no-any-return]
    raise AssertionError("no ACME route")


PROBED_PORTS = (1, 80, 443, 7443, 8080, 8443, 9443, 18443)
PROBED_ADDRESSES = ("127.0.0.1", "10.0.0.5", "169.254.169.254")


def _refusals(guard: TargetGuard) -> dict[tuple[str, int], str]:
    """What the guard refuses, among a few addresses and ports, and why."""
    refused = {}
    for address in PROBED_ADDRESSES:
        for port in PROBED_PORTS:
            try:
                guard.check(ipaddress.ip_address(address), port, "web.internal")
            except TargetRefused as exc:
                refused[(address, port)] = str(exc)
    return refused


@contextlib.contextmanager
def served(app: Starlette) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread, lifespan on; yields the base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                                           server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture
def app_parts(acme_home: Path, challtestsrv: ChallTestSrv) -> Iterator[tuple[Any, Any]]:
    config = acme_config(acme_home, challtestsrv)
    authority = load_authority(acme_home, PASSWORD, config=config)
    yield config, authority
    authority.store.close()


def test_middleware_added_to_the_app_sees_every_acme_post_of_a_real_client(
        app_parts: tuple[Any, Any], challtestsrv: ChallTestSrv) -> None:
    """certbot's ``acme`` library registers, orders, answers http-01, finalizes and downloads
    against the served app; a middleware added to the app counts each of those POSTs, and the
    guard's ports are still the listen port's afterwards (the app is served on another)."""
    config, authority = app_parts
    app = create_app(authority, config)
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    statuses: list[tuple[str, int]] = []
    app.add_middleware(CountByPath, seen=seen, statuses=statuses)
    guard = _guard(app)
    ports, refused = set(guard.own_ports), _refusals(guard)
    assert ports == {config.listen_host_port[1]}
    with served(app) as base:
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        net = client.ClientNetwork(key, alg=jose.ES256, user_agent="trustyard-tests")
        acme = client.ClientV2(client.ClientV2.get_directory(base + "/acme/acme/directory", net), net)
        acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
        cert_key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.load_der_x509_csr(csr_der(cert_key, [parse_name("mw.internal")])).public_bytes(Encoding.PEM)
        order = acme.new_order(csr)
        for authz in order.authorizations:
            chall = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = chall.response_and_validation(key)
            challtestsrv.add_http01(chall.chall.encode("token"), validation)
            acme.answer_challenge(chall, response)
        done = acme.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=30))
    assert "BEGIN CERTIFICATE" in done.fullchain_pem
    for kind in ACME_PATH_KINDS:
        assert seen[("POST", kind)] >= 1, (kind, seen)
    assert seen[("GET", "directory")] >= 1 and seen[("HEAD", "new-nonce")] >= 1
    assert len(statuses) == sum(seen.values())  # and it saw every answer go out
    assert set(guard.own_ports) == ports and _refusals(guard) == refused


def test_an_unexpected_failure_in_an_acme_handler_reaches_the_apps_exception_handling(
        app_parts: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A handler that raises: the app's exception handler gets the failure (its cause chained),
    a middleware sees the 500 go out, the log names the request with the cause's traceback,
    and the client gets a serverInternal problem+json carrying a fresh nonce it can spend."""
    config, authority = app_parts

    def broken(self: AcmeService, request: Any, caller: Any) -> Any:
        raise RuntimeError("a bug in new-order")

    monkeypatch.setattr(AcmeService, "new_order", broken)
    app = create_app(authority, config)
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    statuses: list[tuple[str, int]] = []
    app.add_middleware(CountByPath, seen=seen, statuses=statuses)
    handled: list[tuple[type, BaseException | None]] = []
    for key, handler in list(app.exception_handlers.items()):
        async def recording(request: Any, exc: Exception, handler: Any = handler) -> Any:
            handled.append((type(exc), exc.__cause__))
            return await handler(request, exc)
        app.exception_handlers[key] = recording
    with served(app) as base, httpx.Client(timeout=20) as http, caplog.at_level(logging.ERROR):
        acme = Acme(http, base + "/acme/acme/directory")
        assert acme.register().status_code == 201
        failed = acme.new_order("broken.internal")
        nonce = failed.headers.get("replay-nonce")
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.json() == {"type": "urn:ietf:params:acme:error:serverInternal", "status": 500,
                                 "detail": "internal error; the server log has the details"}
        assert int(failed.headers["content-length"]) == len(failed.content)
        assert failed.headers["cache-control"] == "no-store"
        assert failed.headers["link"] == f'<{base}/acme/acme/directory>;rel="index"'
        assert nonce and "bug" not in failed.text
        again = acme.post(acme.kid, retries=1)  # the account, with the nonce the 500 carried
        assert again.status_code == 200, again.text
    assert len(handled) == 1
    assert isinstance(handled[0][1], RuntimeError) and str(handled[0][1]) == "a bug in new-order"
    assert ("/acme/acme/new-order", 500) in statuses
    logged = [r for r in caplog.records if r.name == "trustyard.api" and "POST /acme/acme/new-order" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], RuntimeError)


BASES = [("http://ca.internal:9443", "http://ca.internal:9443"), ("https://ca.internal", "https://ca.internal"),
         ("http://[::1]:8080", "http://[::1]:8080"), ("http://127.0.0.1:18443", "http://127.0.0.1:18443"),
         ("http://testserver:1", "http://testserver:1"), ("https://127.0.0.1:8443", "https://127.0.0.1:8443")]


def test_the_base_url_follows_the_request_and_leaves_the_guards_ports_alone(env: Env) -> None:
    """Requests addressed to several hosts and ports: each directory names the URL the client
    used, POSTs to it work, and afterwards the guard has the same ports and refuses exactly
    what it refused before."""
    app = env.http.app
    guard = _guard(app)
    ports, refused = set(guard.own_ports), _refusals(guard)
    assert ("127.0.0.1", 8443) in refused and ("169.254.169.254", 80) in refused
    for url, expected in BASES:
        http = TestClient(app, base_url=url)
        directory = http.get("/acme/acme/directory").json()
        assert directory["newNonce"] == expected + "/acme/acme/new-nonce"
        assert http.head(directory["newNonce"]).status_code == 200
        assert Acme(http, url + "/acme/acme/directory").register().status_code == 201
    # HTTP/1.0 without a Host header: the address the server listens on
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.0", "method": "GET", "scheme": "http",
             "path": "/acme/acme/directory", "raw_path": b"/acme/acme/directory", "query_string": b"",
             "root_path": "", "server": ("10.1.2.3", 7443), "client": ("127.0.0.1", 5000), "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200 and b'"http://10.1.2.3:7443/acme/acme/new-nonce"' in sent[1]["body"]
    assert set(guard.own_ports) == ports
    assert _refusals(guard) == refused


def test_serve_refuses_to_validate_against_the_port_it_was_told_to_listen_on(
        acme_home: Path, challtestsrv: ChallTestSrv) -> None:
    """``trustyard serve --listen`` on a port trustyard.toml does not name: the workers' guard
    has that port from the start, so an http-01 challenge that would make the CA fetch from
    itself on loopback is refused as the CA's own port."""
    path = acme_home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    doc["acme"] = {"allow_targets": ["127.0.0.0/8"], "validation_timeout": 5.0}
    path.write_text(tomli_w.dumps(doc))
    port = free_port()
    assert not doc["server"]["listen"].endswith(f":{port}")
    server = start_server(acme_home, port=port, env={"TRUSTYARD_ACME_HTTP_PORT": str(port),
                                                     "TRUSTYARD_ACME_RESOLVER": challtestsrv.resolver})
    try:
        with server.client() as http:
            acme = Acme(http, server.url + "/acme/acme/directory")
            assert acme.register().status_code == 201
            order = acme.new_order("self.internal")
            assert order.status_code == 201, order.text
            authz_url = order.json()["authorizations"][0]
            challenge = next(c for c in acme.post(authz_url).json()["challenges"] if c["type"] == "http-01")
            assert acme.post(challenge["url"], {}).status_code == 200
            authz = poll(acme, authz_url)
    finally:
        server.stop()
    assert authz["status"] == "invalid", authz
    error = next(c for c in authz["challenges"] if c["type"] == "http-01")["error"]
    assert f"port {port} is the CA's own port" in error["detail"], error
