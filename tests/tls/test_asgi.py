"""The identity policy enforced behind a real uvicorn, called by real httpx and requests."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from trustyard.testing import TestCA, self_signed
from trustyard.tls import (
    IdentityMiddleware,
    IdentityPolicy,
    client_context,
    peer_identity,
    server_context,
)
from trustyard.tls.asgi import SCOPE_KEY
from trustyard.tls.requests import ContextAdapter

from .net import uvicorn_server

POLICY = """
[[allow]]
identities = ["spiffe://prod.internal/orders"]

[[allow]]
identities = ["spiffe://prod.internal/billing/*"]
paths = ["/invoices"]
methods = ["GET"]

[[allow]]
identities = ["*.ops.internal"]
paths = ["/admin"]
"""


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with what the middleware and the protocol put into the scope."""
    tls = scope["extensions"]["tls"]
    body = json.dumps({
        "identity": scope[SCOPE_KEY].name,
        "path": scope["path"],
        "chain_length": len(tls["client_cert_chain"]),
        "client_cert_name": tls["client_cert_name"],
        "tls_version": tls["tls_version"],
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Path]:
    return TestCA("Mesh"), tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="module")
def url(pki: tuple[TestCA, Path]) -> Iterator[str]:
    ca, base = pki
    server_dir = ca.issue("localhost", "spiffe://prod.internal/api").write_agent_dir(base / "server")
    app = IdentityMiddleware(echo_app, IdentityPolicy.from_toml(POLICY))
    with uvicorn_server(app, server_context(server_dir, client_auth="optional")) as base_url:
        yield base_url


def client_dir(pki: tuple[TestCA, Path], *names: str) -> Path:
    ca, base = pki
    return ca.issue(*names).write_agent_dir(base / "clients" / names[0].replace("/", "_").replace(":", ""))


def get(pki: tuple[TestCA, Path], url: str, *names: str, method: str = "GET", path: str = "/") -> httpx.Response:
    ctx = client_context(client_dir(pki, *names)) if names else client_context(ca=pki[1] / "server" / "ca.crt")
    with httpx.Client(verify=ctx, timeout=20) as client:
        return client.request(method, url + path)


class TestHttpx:
    def test_allowed_identity_reaches_the_app_with_the_tls_extension(self, pki: Any, url: str) -> None:
        r = get(pki, url, "spiffe://prod.internal/orders", "orders.prod.internal", path="/orders/7")
        assert r.status_code == 200
        assert r.json() == {"identity": "spiffe://prod.internal/orders", "path": "/orders/7", "chain_length": 1,
                            "client_cert_name": "", "tls_version": 0x0304}

    def test_no_client_certificate_is_401_problem(self, pki: Any, url: str) -> None:
        r = get(pki, url)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:trustyard:error:unauthorized"

    def test_identity_outside_the_policy_is_403_problem_naming_it(self, pki: Any, url: str) -> None:
        r = get(pki, url, "spiffe://prod.internal/stranger", path="/orders")
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["identity"] == "spiffe://prod.internal/stranger"
        assert problem["detail"] == "spiffe://prod.internal/stranger may not GET /orders"

    def test_rules_per_path_prefix_and_method(self, pki: Any, url: str) -> None:
        billing = ("spiffe://prod.internal/billing/eu",)
        assert get(pki, url, *billing, path="/invoices/12").status_code == 200
        assert get(pki, url, *billing, method="POST", path="/invoices").status_code == 403
        assert get(pki, url, *billing, path="/invoicesX").status_code == 403
        assert get(pki, url, *billing, path="/invoices/../orders").status_code == 403

    def test_dns_identity_pattern(self, pki: Any, url: str) -> None:
        r = get(pki, url, "alice.ops.internal", path="/admin/users")
        assert r.status_code == 200 and r.json()["identity"] == "alice.ops.internal"
        assert get(pki, url, "alice.ops.internal", path="/orders").status_code == 403

    @pytest.mark.parametrize("kind", ["self-signed", "other CA"])
    def test_untrusted_client_certificate_fails_the_handshake(self, kind: str, pki: Any, url: str,
                                                               tmp_path: Path) -> None:
        ca, _ = pki
        name = "spiffe://prod.internal/orders"
        leaf = self_signed(name) if kind == "self-signed" else TestCA("Rogue").issue(name)
        ctx = client_context(leaf.write_agent_dir(tmp_path / "bad", bundle=ca.bundle()))
        with httpx.Client(verify=ctx, timeout=20) as client, pytest.raises(httpx.TransportError):
            client.get(url + "/orders")

    def test_server_from_another_ca_fails_the_handshake(self, url: str, tmp_path: Path) -> None:
        other = TestCA("Other")
        ctx = client_context(other.issue("spiffe://prod.internal/orders").write_agent_dir(tmp_path / "c"))
        with (httpx.Client(verify=ctx, timeout=20) as client,
              pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED")):
            client.get(url + "/")


class TestRequests:
    def test_context_adapter(self, pki: Any, url: str) -> None:
        ctx = client_context(client_dir(pki, "spiffe://prod.internal/orders"))
        with requests.Session() as session:
            session.mount("https://", ContextAdapter(ctx))
            r = session.get(url + "/orders", timeout=20)
            assert r.status_code == 200 and r.json()["identity"] == "spiffe://prod.internal/orders"
            billing = client_context(client_dir(pki, "spiffe://prod.internal/billing/us"))
            session.mount("https://", ContextAdapter(billing))
            assert session.get(url + "/invoices", timeout=20).status_code == 200
            denied = session.post(url + "/invoices", timeout=20)
            assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"

    def test_context_adapter_without_a_client_certificate(self, pki: Any, url: str) -> None:
        with requests.Session() as session:
            session.mount("https://", ContextAdapter(client_context(ca=pki[1] / "server" / "ca.crt")))
            assert session.get(url + "/orders", timeout=20).status_code == 401

    def test_context_adapter_rejects_a_server_it_does_not_trust(self, url: str, tmp_path: Path) -> None:
        other = TestCA("Other")
        with requests.Session() as session:
            session.mount("https://", ContextAdapter(client_context(ca=other.issue("x").write_agent_dir(tmp_path) / "ca.crt")))
            with pytest.raises(requests.exceptions.SSLError):
                session.get(url + "/", timeout=20)


def served_serial(response: httpx.Response) -> int:
    identity = peer_identity(response.extensions["network_stream"].get_extra_info("ssl_object"))
    assert identity is not None
    return identity.serial


def test_uvicorn_rotation_keeps_open_connections_and_serves_new_files(tmp_path: Path) -> None:
    ca = TestCA("Rotate")
    server_dir = ca.issue("localhost").write_agent_dir(tmp_path / "server")
    cdir = ca.issue("spiffe://prod.internal/orders").write_agent_dir(tmp_path / "client")
    app = IdentityMiddleware(echo_app, IdentityPolicy.from_toml(POLICY))
    sctx = server_context(server_dir, client_auth="optional")
    first = sctx.serial
    with uvicorn_server(app, sctx) as url, \
            httpx.Client(verify=client_context(cdir), timeout=20) as old, \
            httpx.Client(verify=client_context(cdir), timeout=20) as fresh:
        r = old.get(url + "/a")
        assert r.status_code == 200 and served_serial(r) == first
        new_leaf = ca.issue("localhost")
        new_leaf.write_agent_dir(server_dir)
        ca.issue("spiffe://prod.internal/orders", "v2.orders.internal").write_agent_dir(cdir)
        r = fresh.get(url + "/b")
        assert r.status_code == 200 and served_serial(r) == new_leaf.serial
        # The keep-alive connection opened before the rotation still answers, on its old certificate.
        r = old.get(url + "/c")
        assert r.status_code == 200 and served_serial(r) == first


def test_async_httpx_client(pki: Any, url: str) -> None:
    import asyncio

    async def call() -> httpx.Response:
        ctx = client_context(client_dir(pki, "spiffe://prod.internal/orders"))
        async with httpx.AsyncClient(verify=ctx, timeout=20) as client:  # the wrap_bio path
            return await client.get(url + "/orders")

    r = asyncio.run(call())
    assert r.status_code == 200 and r.json()["identity"] == "spiffe://prod.internal/orders"
    ssl_object = r.extensions["network_stream"].get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    server = peer_identity(ssl_object)  # from an SSLObject: the server's URI SAN comes first
    assert server is not None and server.name == "spiffe://prod.internal/api"


def test_middleware_refuses_websockets_without_a_certificate_and_passes_lifespan() -> None:
    import asyncio

    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = IdentityMiddleware(app, IdentityPolicy.from_toml(POLICY))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware({"type": "websocket", "path": "/ws", "extensions": {}}, receive, send))
    asyncio.run(middleware({"type": "lifespan"}, receive, send))
    assert sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008
    assert seen == ["lifespan"]


def test_uvicorn_command_line_with_the_tls_protocol(tmp_path: Path) -> None:
    """The documented CLI form: ``uvicorn --http trustyard.tls.uvicorn:TLSProtocol ...``."""
    import socket
    import subprocess
    import sys
    import time

    ca = TestCA("Cli")
    sdir = ca.issue("localhost").write_agent_dir(tmp_path / "server")
    cdir = ca.issue("spiffe://prod.internal/orders").write_agent_dir(tmp_path / "client")
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--fd", str(sock.fileno()), "--http", "trustyard.tls.uvicorn:TLSProtocol",
         "--ssl-certfile", str(sdir / "tls.crt"), "--ssl-keyfile", str(sdir / "tls.key"),
         "--ssl-ca-certs", str(sdir / "ca.crt"), "--ssl-cert-reqs", "1", "--lifespan", "off", "--ws", "none",
         "--log-level", "warning", "tests.tls.app:app"],
        pass_fds=[sock.fileno()], cwd=Path(__file__).parents[2],
    )
    sock.close()
    try:
        with httpx.Client(verify=client_context(cdir), timeout=20) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    r = client.get(f"https://localhost:{port}/orders")
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
        assert r.status_code == 200 and r.json()["identity"] == "spiffe://prod.internal/orders"
    finally:
        proc.terminate()
        proc.wait(20)
