"""ACME validation is fair. One account's slow targets (a tarpit that accepts
connections and never answers) cannot hold up another account's validation, and challenges in
flight are limited per account and per order (``rateLimited`` with Retry-After beyond)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca.config import load_config
from trustyard.ca.home import load_authority

from ..support import PASSWORD
from .challtestsrv import ChallTestSrv
from .client import Acme
from .conftest import DIRECTORY, poll

ACME = "urn:ietf:params:acme:error:"
TARPIT, READY = "127.0.0.3", "127.0.0.4"


@pytest.fixture
def tarpit_and_responder() -> Iterator[tuple[int, dict[str, bytes], list[socket.socket]]]:
    """A tarpit on 127.0.0.3 (accepts, never answers) and an http-01 responder on 127.0.0.4,
    on the same port: the port validation uses."""
    tarpit = socket.socket()
    tarpit.bind((TARPIT, 0))
    tarpit.listen(256)
    port = tarpit.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = tarpit.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never read from, never written to

    routes: dict[str, bytes] = {}

    class Responder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    responder = http.server.ThreadingHTTPServer((READY, port), Responder)
    responder.daemon_threads = True
    threading.Thread(target=accept, daemon=True).start()
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    yield port, routes, held
    responder.shutdown()
    responder.server_close()
    tarpit.close()
    for conn in held:
        conn.close()


def test_a_tarpit_account_cannot_delay_another_accounts_validation(
        acme_home: Path, challtestsrv: ChallTestSrv,
        tarpit_and_responder: tuple[int, dict[str, bytes], list[socket.socket]]) -> None:
    port, routes, held = tarpit_and_responder
    config = load_config(acme_home)
    config = replace(config, acme=replace(config.acme, http_port=port, tls_port=port, resolver=challtestsrv.resolver,
                                          allow_targets=("127.0.0.0/8",), validation_timeout=5.0,
                                          validations_per_account=20, validations_per_order=8))
    names = [[f"t{o}-{i}.internal" for i in range(10)] for o in range(4)]
    for name in [n for group in names for n in group]:
        challtestsrv.add_a(name, TARPIT)
    challtestsrv.add_a("ready.internal", READY)
    authority = load_authority(acme_home, PASSWORD, config=config)
    try:
        with TestClient(create_app(authority, config), raise_server_exceptions=False) as http_client:
            greedy = Acme(http_client, DIRECTORY)
            assert greedy.register().status_code == 201
            answered, limited = 0, []
            for order_names in names:  # 4 orders of 10: 40 challenges pointing at the tarpit
                order = greedy.new_order(*order_names)
                assert order.status_code == 201, order.text
                for url in order.json()["authorizations"]:
                    challenge = next(c for c in greedy.post(url).json()["challenges"] if c["type"] == "http-01")
                    response = greedy.post(challenge["url"], {})
                    if response.status_code == 200:
                        answered += 1
                        continue
                    assert response.status_code == 429, response.text
                    assert response.json()["type"] == ACME + "rateLimited"
                    assert int(response.headers["Retry-After"]) >= 1
                    limited.append((response.json()["detail"], challenge["url"]))
            # Per order: 8 of each of the first two orders' 10; per account: 20 in all (the third
            # order gets 4, the fourth none).
            assert answered == 20
            assert sum("the order already" in detail for detail, _url in limited) == 2 + 2
            assert sum("the account already" in detail for detail, _url in limited) == 6 + 10
            # A refused challenge changed nothing: it is still pending, ready to be answered later.
            assert greedy.post(limited[-1][1]).json()["status"] == "pending"
            deadline = time.monotonic() + 5
            while len(held) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(held) >= 4  # the tarpit holds the greedy account's probes

            other = Acme(http_client, DIRECTORY)
            assert other.register().status_code == 201
            order = other.new_order("ready.internal")
            authz_url = order.json()["authorizations"][0]
            challenge = next(c for c in other.post(authz_url).json()["challenges"] if c["type"] == "http-01")
            routes[f"/.well-known/acme-challenge/{challenge['token']}"] = \
                other.key_authorization(challenge["token"]).encode()
            started = time.monotonic()
            assert other.post(challenge["url"], {}).status_code == 200
            done = poll(other, authz_url, timeout=10)
            elapsed = time.monotonic() - started
            assert done["status"] == "valid", done
            assert elapsed < 2.0, f"the ready challenge took {elapsed:.1f} s behind the tarpit"
    finally:
        authority.store.close()


def test_loop_slots_go_to_waiting_accounts_in_turn() -> None:
    """Two accounts keep every slot busy and waiting; a third account's probe gets the second
    free slot (its turn), not the slot after everything queued before it."""
    import asyncio

    from trustyard.acme.guard import TargetGuard
    from trustyard.acme.probes import Checker, Probe, Resolver
    from trustyard.acme.validation import ValidationAuthority

    started: list[str] = []

    class Slow(Checker):
        async def check(self, p: Probe) -> dict[str, Any] | None:
            started.append(p.challenge_id)
            await asyncio.sleep(0.05)
            return None

    recorded: list[str] = []
    va = ValidationAuthority(Slow(TargetGuard(), Resolver(), 80, 443, 5.0), lambda cid, e: recorded.append(cid),
                             workers=2, account_slots=2)

    async def burst() -> None:
        for account in "AC":
            for i in range(6):
                assert va.submit(Probe(f"{account}{i}", "http-01", "dns", "x.internal", "k.t", account_id=account,
                                       order_id=account))
        await asyncio.sleep(0.01)
        assert va.submit(Probe("b0", "http-01", "dns", "y.internal", "k.t", account_id="B", order_id="o2"))
        while len(recorded) < 13:
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(burst(), 10))
    assert started.index("b0") <= 3, started  # first come, first served: 4 (after A0 A1 C0 C1)
