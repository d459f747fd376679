"""The ACME server's HTTP face: Starlette routes around ``trustyard.acme.AcmeService``.

Everything protocol-shaped lives in ``trustyard.acme``; this module only turns requests into
``AcmeRequest`` values (reading at most the body cap) and ``AcmeResponse`` values into responses.
Mounted by ``create_app`` at ``/acme/{provisioner}/...`` for every provisioner of type ``acme``.
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..acme import AcmeError, AcmeRequest, AcmeResponse, AcmeService
from ..acme.guard import TargetGuard
from ..acme.validation import Checker, Resolver, ValidationAuthority
from ..ca.authority import Authority
from ..ca.config import Config
from ..store.acme_store import AcmeStore
from .durability import durably

Handler = Callable[[Request], Awaitable[Response]]


def build_service(authority: Authority, config: Config) -> AcmeService:
    acme = config.acme
    _host, listen_port = config.listen_host_port
    guard = TargetGuard.from_allow_list(acme.allow_targets, own_ports={listen_port})
    checker = Checker(guard, Resolver(acme.resolver, timeout=acme.validation_timeout), acme.http_port,
                      acme.tls_port, acme.validation_timeout)
    store = AcmeStore(authority.store)
    holder: list[AcmeService] = []
    va = ValidationAuthority(checker, lambda cid, error: holder[0].record_validation(cid, error),
                             workers=acme.validation_workers)
    names = {p.name for p in config.provisioners if p.type == "acme"}
    service = AcmeService(authority, store, acme, names, va, max_body_bytes=config.max_body_bytes)
    holder.append(service)
    return service


def _render(response: AcmeResponse) -> Response:
    body = response.body
    if isinstance(body, dict):
        content = json.dumps(body, separators=(",", ":")).encode()
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = b""
    media = response.content_type if content else None
    return Response(content, status_code=response.status, media_type=media, headers=response.headers)


class AcmeRoutes:
    def __init__(self, service: AcmeService, guard_ports: set[int] | None = None) -> None:
        self.service = service
        self.guard_ports = guard_ports

    def _base(self, request: Request) -> str:
        """scheme://host[:port] as the client addressed us (what its JWS url must start with)."""
        scope = request.scope
        server = scope.get("server")
        if server and self.guard_ports is not None and server[1]:
            self.guard_ports.add(int(server[1]))  # the port we were reached on is never a validation target
        host = request.headers.get("host")
        if host is None:  # HTTP/1.0 without Host: Starlette's rule, the address we listen on
            return f"{request.url.scheme}://{request.url.netloc}"
        return f"{scope['scheme']}://{host}"

    async def directory(self, request: Request) -> Response:
        return self._safe(lambda: self.service.directory(self._base(request), request.path_params["provisioner"]))

    async def new_nonce(self, request: Request) -> Response:
        return self._safe(lambda: self.service.new_nonce(self._base(request), request.path_params["provisioner"],
                                                         request.method))

    async def renewal_info(self, request: Request) -> Response:
        return self._safe(lambda: self.service.renewal_info(self._base(request), request.path_params["provisioner"],
                                                            request.path_params["cert_id"]))

    def _safe(self, call: Callable[[], AcmeResponse]) -> Response:
        try:
            return _render(call())
        except AcmeError as exc:
            return _render(AcmeResponse(exc.status, exc.problem(), "application/problem+json", dict(exc.headers)))

    def post(self, resource: str) -> Handler:
        async def handler(request: Request) -> Response:
            cap = self.service.max_body_bytes
            chunks, size, too_large = [], 0, False
            headers = request.headers
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                too_large = True
            else:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        too_large = True
                        break
                    chunks.append(chunk)
            path_params = request.path_params
            params = {k: v for k, v in path_params.items() if k != "provisioner"}
            acme_request = AcmeRequest(
                base_url=self._base(request), provisioner=path_params["provisioner"], resource=resource,
                path=request.scope["path"], content_type=headers.get("content-type", "").split(";")[0].strip()
                .lower(), body=b"".join(chunks), too_large=too_large, params=params,
                accept=headers.get("accept", ""))
            # On the event loop, like the REST issuance path: short database transactions and one
            # signature; only the WAL flush waits in a thread (api.durability).
            return _render(await durably(self.service.post, acme_request))
        return handler


def acme_routes(authority: Authority, config: Config) -> list[Route]:
    service = build_service(authority, config)
    routes = AcmeRoutes(service, service.va.checker.guard.own_ports)
    p = "/acme/{provisioner}"
    table = [
        ("new-account", "/new-account"), ("account", "/account/{id}"), ("orders", "/account/{id}/orders"),
        ("key-change", "/key-change"), ("new-order", "/new-order"), ("order", "/order/{id}"),
        ("finalize", "/order/{id}/finalize"), ("authz", "/authz/{id}"), ("chall", "/chall/{id}"),
        ("cert", "/cert/{serial}"), ("revoke-cert", "/revoke-cert"),
    ]
    return [
        Route(p + "/directory", routes.directory, methods=["GET"]),
        Route(p + "/new-nonce", routes.new_nonce, methods=["GET", "HEAD"]),
        Route(p + "/renewal-info/{cert_id}", routes.renewal_info, methods=["GET"]),
        *[Route(p + path, routes.post(resource), methods=["POST"]) for resource, path in table],
    ]
