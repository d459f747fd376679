"""The ACME server's HTTP face: Starlette routes around ``trustyard.acme.AcmeService``.

Everything protocol-shaped lives in ``trustyard.acme``; this module only turns requests into
``AcmeRequest`` values (reading at most the body cap) and ``AcmeResponse`` values into responses.
Mounted by ``create_app`` at ``/acme/{provisioner}/...`` for every provisioner of type ``acme``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..acme import AcmeError, AcmeFailure, AcmeRequest, AcmeResponse, AcmeService
from ..acme.envelope import REPLAY_NONCE
from ..acme.guard import TargetGuard
from ..acme.model import Urls
from ..acme.probes import Checker, Resolver
from ..acme.problems import AcmeCode
from ..acme.validation import POLL_HOLD, ValidationAuthority
from ..ca.authority import Authority
from ..ca.config import Config
from ..errors import Overloaded
from ..store import outage, refusals
from ..store.acme_store import AcmeStore
from .admission import Admission
from .durability import durably

log = logging.getLogger("trustyard.api")


def build_service(authority: Authority, config: Config) -> AcmeService:
    acme = config.acme
    _host, listen_port = config.listen_host_port
    guard = TargetGuard.from_allow_list(acme.allow_targets, own_ports={listen_port})
    checker = Checker(guard, Resolver(acme.resolver), acme.http_port,
                      acme.tls_port, acme.validation_timeout)
    store = AcmeStore(authority.store)
    va = ValidationAuthority(checker, store.finish_challenge,  # a probe's outcome goes straight to the store
                             workers=acme.validation_workers, account_slots=acme.validation_account_workers,
                             per_account=acme.validations_per_account, per_order=acme.validations_per_order)
    names = {p.name for p in config.provisioners if p.type == "acme"}
    return AcmeService(authority, store, acme, names, va, max_body_bytes=config.max_body_bytes)


def _content(response: AcmeResponse) -> tuple[bytes, str | None]:
    """The body's bytes and media type (none for an empty body)."""
    body = response.body
    if isinstance(body, dict):
        content = json.dumps(body, separators=(",", ":")).encode()
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = b""
    return content, response.content_type if content else None


def _render(response: AcmeResponse) -> Response:
    content, media = _content(response)
    return Response(content, status_code=response.status, media_type=media, headers=response.headers)


async def _send(response: AcmeResponse, send: Send) -> None:
    """``_render`` sent straight as ASGI messages, the same headers without a Response object."""
    content, media = _content(response)
    headers = [(b"content-length", str(len(content)).encode())]
    if media:
        headers.append((b"content-type", media.encode("latin-1")))
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def base_url(scope: Scope, host: str | None) -> str:
    """scheme://host[:port] as the client addressed us (what its JWS url must start with).

    A function of the request alone: the port it arrived on changes nothing else (the
    validation guard's ports are the listen port, fixed when the guard is built)."""
    if host is None:  # HTTP/1.0 without Host: Starlette's rule, the address we listen on
        url = URL(scope=scope)
        return f"{url.scheme}://{url.netloc}"
    return f"{scope['scheme']}://{host}"


class AcmeRoutes:
    def __init__(self, service: AcmeService, admission: Admission | None = None) -> None:
        self.service = service
        self.admission = admission or Admission()  # finalize signs: it queues with REST sign and renew

    async def directory(self, request: Request) -> Response:
        return self._safe(lambda: self.service.directory(self._request_base(request),
                                                         request.path_params["provisioner"]))

    async def new_nonce(self, request: Request) -> Response:
        return self._safe(lambda: self.service.new_nonce(self._request_base(request),
                                                         request.path_params["provisioner"], request.method,
                                                         _source(request.scope)))

    async def renewal_info(self, request: Request) -> Response:
        return self._safe(lambda: self.service.renewal_info(self._request_base(request),
                                                            request.path_params["provisioner"],
                                                            request.path_params["cert_id"]))

    def _request_base(self, request: Request) -> str:
        return base_url(request.scope, request.headers.get("host"))

    def _safe(self, call: Callable[[], AcmeResponse]) -> Response:
        try:
            return _render(call())
        except AcmeError as exc:
            return _render(AcmeResponse(exc.status, exc.problem(), "application/problem+json", dict(exc.headers)))

    def post(self, resource: str) -> AcmePost:
        return AcmePost(self, resource)


class AcmePost:
    """One ACME POST resource as a bare ASGI endpoint, routed by Starlette like every request
    (its ``Route`` calls it with the path parameters in the scope, inside the app's middleware
    and exception handling).

    Every ACME exchange is a POST through here, eight to an order; Starlette's Request and
    response wrappers cost as much CPU as the service's own work on a polling request, so the
    body is read and the answer sent as ASGI messages. ``AcmeService.post`` turns every
    refusal into a problem document; a failure that is not the client's (a bug, the
    database, the WAL flush) leaves as ``AcmeFailure`` for the app's exception handler
    (``acme_failure``), which logs it and sends its serverInternal answer."""

    def __init__(self, routes: AcmeRoutes, resource: str) -> None:
        self.routes, self.resource = routes, resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send)

    def _overloaded(self, scope: Scope, exc: Overloaded) -> AcmeResponse:
        """The ACME form of the load shed: ``rateLimited`` with 503, Retry-After and a fresh nonce."""
        error = AcmeError(AcmeCode.RATE_LIMITED, exc.detail, status=503)
        headers = {"Retry-After": str(exc.retry_after), "Cache-Control": "no-store"}
        service = self.routes.service
        try:
            headers[REPLAY_NONCE] = service.store.mint_nonce(retry=True, source=_source(scope),
                                                             keep=service.config.nonces_per_client)
        except Exception:  # the database is down: the problem document still goes out
            log.exception("cannot mint a nonce")
        provisioner = scope["path_params"].get("provisioner", "")
        if provisioner in service.provisioners:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            headers["Link"] = f'<{Urls(base_url(scope, host), provisioner).directory()}>;rel="index"'
        return AcmeResponse(503, error.problem(), "application/problem+json", headers)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        routes = self.routes
        host = content_type = accept = None
        declared = b""
        for name, value in scope["headers"]:  # the first of repeated headers counts, as in Starlette
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length" and not declared:
                declared = value
            elif name == b"accept" and accept is None:
                accept = value.decode("latin-1")
        cap = routes.service.max_body_bytes
        chunks: list[bytes] = []
        size, too_large = 0, declared.isdigit() and int(declared) > cap
        more = not too_large
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                too_large = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        path_params = scope["path_params"]
        params = {k: v for k, v in path_params.items() if k != "provisioner"}
        if self.resource == "authz":
            # Before the request's transaction, so the wait holds no lock; and before its
            # signature is checked, so anyone who knows the id can be held, for 1 s at most.
            await routes.service.va.settled(params["id"], POLL_HOLD)
        acme_request = AcmeRequest(
            base_url=base_url(scope, host), provisioner=path_params["provisioner"], resource=self.resource,
            path=scope["path"], content_type=(content_type or "").split(";")[0].strip().lower(),
            body=b"".join(chunks), too_large=too_large, params=params, accept=accept or "", source=_source(scope))
        # On the event loop, like the REST issuance path: short database transactions and one
        # signature; only the WAL flush waits in a thread (api.durability).
        try:
            if self.resource == "finalize":
                # Admitted once the (capped) body is in: a client that sends its body slowly
                # holds no admission slot, so it cannot keep the signing queue "full".
                try:
                    with routes.admission.admit("acme-finalize"):
                        answer = await durably(routes.admission.timed(routes.service.post), acme_request)
                except Overloaded as exc:
                    answer = self._overloaded(scope, exc)
            else:
                answer = await durably(routes.service.post, acme_request)
        except AcmeFailure:
            raise
        except Exception as exc:  # the flush failed: the writes may not be on disk, so promise nothing
            error = AcmeError.internal()
            raise AcmeFailure(AcmeResponse(error.status, error.problem(), "application/problem+json")) from exc
        await _send(answer, send)


async def acme_failure(request: Request, exc: Exception) -> Response:
    """The app's exception handler for ``AcmeFailure``: the cause goes to the log, the
    client gets the serverInternal problem (with its fresh nonce) the service prepared."""
    assert isinstance(exc, AcmeFailure)
    if outage.unavailable(exc.__cause__):  # a database restart: 503 and Retry-After, the same problem type
        log.warning("%s %s: the database is out of reach: %s", request.method, request.url.path, exc.__cause__)
        answer = exc.answer
        body = {**answer.body, "status": 503} if isinstance(answer.body, dict) else answer.body
        return _render(AcmeResponse(503, body, answer.content_type,
                                    {**answer.headers, "Retry-After": str(outage.RETRY_AFTER_SECONDS)}))
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc.__cause__ or exc)
    return _render(exc.answer)


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return refusals.source_key(client[0] if client else None)


def acme_routes(authority: Authority, config: Config, admission: Admission | None = None) -> list[Route]:
    service = build_service(authority, config)
    routes = AcmeRoutes(service, admission)
    p = "/acme/{provisioner}"
    # The router tries routes in order: the POSTs of every order first, the most frequent
    # (polls) at the head; no two paths overlap, so the order changes only the cost.
    table = [
        ("authz", "/authz/{id}"), ("order", "/order/{id}"), ("chall", "/chall/{id}"),
        ("finalize", "/order/{id}/finalize"), ("new-order", "/new-order"), ("cert", "/cert/{serial}"),
        ("new-account", "/new-account"), ("account", "/account/{id}"), ("orders", "/account/{id}/orders"),
        ("key-change", "/key-change"), ("revoke-cert", "/revoke-cert"),
    ]
    return [
        *[Route(p + path, routes.post(resource), methods=["POST"]) for resource, path in table],
        Route(p + "/new-nonce", routes.new_nonce, methods=["GET", "HEAD"]),
        Route(p + "/directory", routes.directory, methods=["GET"]),
        Route(p + "/renewal-info/{cert_id}", routes.renewal_info, methods=["GET"]),
    ]
