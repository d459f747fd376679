"""The identity middleware decides on the path the application routes.

A real Starlette application (a mounted sub-app and a ``{path:path}`` route) behind
:class:`IdentityMiddleware`, served by uvicorn with ``trustyard.tls.uvicorn`` over mutual
TLS, called with raw request lines over an ``ssl`` socket (httpx and browsers resolve dot
segments before sending; an attacker does not). A caller allowed only ``GET /public`` must
never reach ``/admin`` or ``/ops``, whatever spelling of the path it sends. Both of
uvicorn's HTTP parsers (h11 and httptools) are exercised.

Identity rules match by SAN type, also over a real handshake: a certificate whose URI SAN
*reads* like a DNS name, or whose DNS SAN reads like a URI or an IP, is not let in by a
rule of the other type.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from trustyard.testing import TestCA
from trustyard.tls import IdentityMiddleware, IdentityPolicy, client_context, server_context
from trustyard.tls.uvicorn import H11TLSProtocol, TLSProtocol

from .net import uvicorn_server

READER = "spiffe://prod.internal/reader"

POLICY = f"""
[[allow]]
identities = ["{READER}"]
paths = ["/public"]
methods = ["GET"]

[[allow]]
identities = ["*.ops.internal"]
paths = ["/ops"]

[[allow]]
identities = ["spiffe://prod.internal/billing/*"]
paths = ["/billing"]

[[allow]]
identities = ["10.0.0.0/8"]
paths = ["/net"]
"""

# Every spelling of "go up out of /<p>/ and into /public" (and of the ambiguous
# characters around it) the issue names, with mixed-case variants of each encoding.
BYPASS_FORMS = [
    "/{p}/../public",
    "/{p}/x/../../public",
    "/{p}/./../public",
    "/{p}/%2e%2e/public",
    "/{p}/%2E%2E/public",
    "/{p}/%2e%2E/public",
    "/{p}/%2E%2e/public",
    "/{p}/.%2e/public",
    "/{p}/%2E./public",
    "/{p}/x/%2e%2e/%2E%2E/public",
    "/{p}%2f..%2fpublic",
    "/{p}%2F..%2Fpublic",
    "/{p}%2f%2e%2e%2fpublic",
    "/{p}%2F%2E%2e%2Fpublic",
    "/{p}%5c..%5cpublic",
    "/{p}%5C..%5Cpublic",
    "/{p}/%5C..%5Cpublic",
    "/{p}/%00/../public",
    "/{p}/x%00",
    "/public%00/../{p}/x",
    "/public/..%2F{p}/x",
    "/public/%2e%2e/{p}/x",
    "/public/%2E%2e/{p}",
    "/{p}/x?next=/public",  # the query is not the path: a plain refusal (403), still not the handler
]

hits: list[str] = []


async def public(request: Request) -> PlainTextResponse:
    return PlainTextResponse("public")


async def privileged(request: Request) -> PlainTextResponse:
    hits.append(request.scope["path"])
    return PlainTextResponse("privileged:" + request.path_params["path"])


def make_app() -> Any:
    admin = Starlette(routes=[Route("/{path:path}", privileged)])
    app = Starlette(routes=[
        Route("/public", public),
        Mount("/admin", app=admin),                 # a mounted sub-app
        Route("/ops/{path:path}", privileged),      # a {path:path} route
        Route("/billing/{path:path}", privileged),
        Route("/net/{path:path}", privileged),
    ])
    return IdentityMiddleware(app, IdentityPolicy.from_toml(POLICY))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Path]:
    return TestCA("Paths"), tmp_path_factory.mktemp("paths")


@pytest.fixture(scope="module", params=[TLSProtocol, H11TLSProtocol], ids=lambda c: c.__name__)
def port(request: pytest.FixtureRequest, pki: tuple[TestCA, Path]) -> Iterator[int]:
    ca, base = pki
    server_dir = ca.issue("localhost").write_agent_dir(base / f"server-{request.param.__name__}")
    ctx = server_context(server_dir, client_auth="optional")
    with uvicorn_server(make_app(), ctx, http=request.param) as url:
        yield int(url.rsplit(":", 1)[1])


def client(pki: tuple[TestCA, Path], *names: str | x509.GeneralName) -> ssl.SSLContext:
    ca, base = pki
    directory = base / "clients" / str(abs(hash(tuple(str(n) for n in names))))
    return client_context(ca.issue(*names).write_agent_dir(directory))


@pytest.fixture(scope="module")
def reader(pki: tuple[TestCA, Path]) -> ssl.SSLContext:
    return client(pki, READER)


def raw_request(ctx: ssl.SSLContext, port: int, target: bytes, method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
    """One request line sent exactly as given, over mutual TLS; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except ssl.SSLEOFError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ", 2)[1]), {k.lower(): v for k, v in headers.items()}, body


def test_the_reader_gets_public_and_nothing_else(reader: ssl.SSLContext, port: int) -> None:
    hits.clear()
    status, _, body = raw_request(reader, port, b"/public")
    assert (status, body) == (200, b"public")
    for target in (b"/admin/x", b"/ops/x", b"/admin/public", b"//public", b"/public/../public"):
        status, _, _ = raw_request(reader, port, target)
        assert status in (400, 403, 404), target
    assert hits == []


@pytest.mark.parametrize("prefix", ["admin", "ops"])
@pytest.mark.parametrize("form", BYPASS_FORMS)
def test_no_spelling_of_the_path_reaches_a_handler_the_caller_may_not_call(
    reader: ssl.SSLContext, port: int, form: str, prefix: str,
) -> None:
    hits.clear()
    target = form.format(p=prefix).encode()
    status, headers, body = raw_request(reader, port, target)
    assert hits == [], f"{target!r} reached the {prefix} handler"
    if "?" in form:
        assert status == 403
        return
    # Refused before the policy ran, with a problem document naming why.
    assert status == 400, (target, status, body)
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["type"] == "urn:trustyard:error:ambiguousPath"
    assert "path has" in problem["detail"]


@pytest.mark.parametrize("target", [b"/admin\\..\\public", b"/admin/\\../public", b"/public\x00/../admin/x"])
def test_raw_backslash_and_nul_never_reach_a_handler(reader: ssl.SSLContext, port: int, target: bytes) -> None:
    hits.clear()
    status, _, _ = raw_request(reader, port, target)
    # uvicorn's parser may refuse these itself; either way it is a 400 and no handler ran.
    assert status == 400
    assert hits == []


def test_ambiguous_paths_are_refused_before_authentication(pki: tuple[TestCA, Path], port: int) -> None:
    ca, base = pki
    bundle = base / "anonymous-ca.crt"  # the port fixture may not have written the other parser's files yet
    bundle.write_bytes(ca.bundle())
    anonymous = client_context(ca=bundle)
    assert raw_request(anonymous, port, b"/admin/%2e%2e/public")[0] == 400
    assert raw_request(anonymous, port, b"/public")[0] == 401


class TestSanTypes:
    """A rule names a SAN type; a SAN of another type that reads the same never matches."""

    @pytest.mark.parametrize(("san", "path"), [
        (x509.UniformResourceIdentifier("alice.ops.internal"), "/ops/x"),      # URI SAN, DNS rule
        (x509.DNSName("spiffe://prod.internal/billing/eu"), "/billing/x"),     # DNS SAN, URI rule
        (x509.DNSName("10.0.0.7"), "/net/x"),                                  # DNS SAN, IP rule
        (x509.UniformResourceIdentifier("10.0.0.7"), "/net/x"),                # URI SAN, IP rule
    ])
    def test_a_san_of_another_type_is_refused(self, pki: tuple[TestCA, Path], port: int,
                                              san: x509.GeneralName, path: str) -> None:
        hits.clear()
        status, _, body = raw_request(client(pki, san), port, path.encode())
        assert status == 403, body
        assert hits == []

    @pytest.mark.parametrize(("name", "path"), [
        ("alice.ops.internal", "/ops/x"),
        ("spiffe://prod.internal/billing/eu", "/billing/x"),
        ("10.0.0.7", "/net/x"),
    ])
    def test_the_same_text_as_the_right_type_is_allowed(self, pki: tuple[TestCA, Path], port: int,
                                                        name: str, path: str) -> None:
        status, _, body = raw_request(client(pki, name), port, path.encode())
        assert (status, body) == (200, b"privileged:x")

    def test_a_spiffe_id_with_dot_segments_does_not_match_a_prefix_rule(self, pki: tuple[TestCA, Path],
                                                                        port: int) -> None:
        # spiffe://prod.internal/billing/* must not admit .../billing/../admin (in the middleware too).
        ctx = client(pki, x509.UniformResourceIdentifier("spiffe://prod.internal/billing/../admin"))
        assert raw_request(ctx, port, b"/billing/x")[0] == 403
