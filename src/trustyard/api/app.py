"""The REST API (Starlette). ``create_app`` wires routes to an Authority; ``app_from_env``
is the factory uvicorn workers call (``serve`` passes the home and password by environment)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..ca import bundle, oplog
from ..ca.authority import Authority, Issued, duration_field
from ..ca.config import Config
from ..ca.fleet import Fleet
from ..ca.ocsp import POLL_SECONDS, OcspResponder
from ..errors import BadRequest, Code, Forbidden, TrustyardError, Unauthorized
from ..store.fleet_store import FleetStore
from ..units import format_time
from ..x509 import truststore
from . import metrics
from .admission import Admission
from .durability import durably
from .ocsp_routes import PATH as OCSP_PATH
from .ocsp_routes import OcspEndpoint
from .openapi import SPEC
from .problems import http_error, trustyard_error, unexpected_error

log = logging.getLogger("trustyard.api")


class Api:
    def __init__(self, authority: Authority, admin_token_sha256: str, max_body_bytes: int = 64 * 1024,
                 environment: str = "", fleet: Fleet | None = None, admission: Admission | None = None) -> None:
        self.environment = environment  # init --environment: told with the roots (Trustyard-Environment)
        self.authority = authority
        self.fleet = fleet or Fleet(authority, FleetStore(authority.store))
        self.fleet.listeners.append(metrics.on_checkin)
        self.admin_token_sha256 = admin_token_sha256
        self.max_body_bytes = max_body_bytes
        self.admission = admission or Admission()  # signing requests past the queue's limits get 503
        # The trust bundle and its version (ca/bundle.py): the newest published one, read from the
        # database so what another replica or a rotation publishes is served here too.
        self.bundle = bundle.Current(authority.store, bundle.ensure(authority.store, authority.roots))
        # Check-ins compare against the bundle this server serves (ca/bundle.py), not the one it loaded.
        self.fleet.current_sha256 = lambda: (self.bundle.cached() or self.bundle.load()).sha256
        self._rendered: dict[tuple[int, str], bytes] = {}  # truststores of the current version
        authority.listeners.append(metrics.on_authority_event)

    # -- helpers ------------------------------------------------------------------------------

    async def json_body(self, request: Request, required: set[str], optional: set[str]) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest(f"Content-Type must be application/json, not {ctype or 'missing'!r}",
                             code=Code.UNSUPPORTED_MEDIA_TYPE)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise BadRequest(f"body larger than {self.max_body_bytes} bytes", code=Code.BODY_TOO_LARGE)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise BadRequest(f"body larger than {self.max_body_bytes} bytes", code=Code.BODY_TOO_LARGE)
                chunks.append(chunk)
        except ClientDisconnect:  # gone, or cut at the body deadline (api.protocol): nobody to answer
            raise BadRequest("the client closed the connection before its body arrived",
                             code=Code.INCOMPLETE_BODY) from None
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise BadRequest("the body is not valid JSON", code=Code.MALFORMED_JSON) from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", code=Code.MALFORMED_JSON)
        unknown = set(body) - required - optional
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}", code=Code.UNKNOWN_FIELD)
        missing = required - set(body)
        if missing:
            raise BadRequest(f"missing field(s): {', '.join(sorted(missing))}", code=Code.MISSING_FIELD)
        for key, value in body.items():
            if not isinstance(value, str):
                raise BadRequest(f"field {key!r} must be a string", code=Code.BAD_FIELD)
        return body

    def is_admin(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not self.admin_token_sha256:
            return False
        digest = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
        return hmac.compare_digest(digest, self.admin_token_sha256)

    def require_admin(self, request: Request) -> None:
        if not request.headers.get("authorization"):
            raise Unauthorized("administrator token required (Authorization: Bearer ...)")
        if not self.is_admin(request):
            raise Forbidden("the administrator token is wrong", code=Code.NOT_ADMIN)

    # -- routes -------------------------------------------------------------------------------

    async def current_bundle(self) -> bundle.Bundle:
        cached = self.bundle.cached()
        return cached if cached is not None else await run_in_threadpool(self.bundle.load)

    async def roots(self, request: Request) -> Response:
        """The trust bundle as ``?format=`` (or Accept) asks: pem, p12, jks or configmap. Every
        format carries the version and the SHA-256 of the PEM; the ETag is that digest (with
        the format appended for the others), so If-None-Match answers 304 until it changes."""
        fmt = _roots_format(request)
        current = await self.current_bundle()
        etag = current.etag if fmt == "pem" else f'"{current.sha256}-{fmt}"'
        headers = {"ETag": etag, "Cache-Control": "max-age=60", BUNDLE_VERSION_HEADER: str(current.version),
                   BUNDLE_SHA256_HEADER: current.sha256,
                   **({"Trustyard-Environment": self.environment} if self.environment else {})}
        if etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        if fmt == "pem":
            return Response(current.pem, media_type=ROOTS_MEDIA_TYPES["pem"], headers=headers)
        if fmt == "configmap":
            try:
                body = truststore.render_configmap(current.pem, current.version, current.sha256,
                                                   request.query_params.get("name") or truststore.CONFIGMAP_NAME,
                                                   request.query_params.get("namespace") or None)
            except ValueError as exc:
                raise BadRequest(str(exc), code=Code.BAD_QUERY) from None
            return Response(body, media_type=ROOTS_MEDIA_TYPES[fmt], headers=headers)
        store = self._rendered.get((current.version, fmt))
        if store is None:
            store = await run_in_threadpool(truststore.render, fmt, current.certificates, pem=current.pem,
                                            version=current.version, sha256=current.sha256)
            self._rendered = {k: v for k, v in self._rendered.items() if k[0] == current.version}
            self._rendered[(current.version, fmt)] = store
        headers["Content-Disposition"] = f'attachment; filename="truststore.{fmt}"'
        return Response(store, media_type=ROOTS_MEDIA_TYPES[fmt], headers=headers)

    async def sign(self, request: Request) -> Response:
        # The (capped) body first: a client that sends it slowly holds no admission slot.
        body = await self.json_body(request, {"csr", "token"}, {"ttl"})
        ttl = duration_field("ttl", body["ttl"]) if body.get("ttl") else None  # "" means the default
        with self.admission.admit("sign"):
            issued = await durably(self.admission.timed(self.authority.issue_for_token), body["csr"], body["token"],
                                   ttl, _actor(request))
        return _issued_response(issued, await self.current_bundle())

    async def renew(self, request: Request) -> Response:
        body = await self.json_body(request, {"csr", "proof"}, set())
        with self.admission.admit("renew"):
            issued = await durably(self.admission.timed(self.authority.renew), body["csr"], body["proof"],
                                   _actor(request))
        return _issued_response(issued, await self.current_bundle())

    async def revoke(self, request: Request) -> Response:
        body = await self.json_body(request, {"serial"}, {"reason", "proof"})
        admin = False
        if request.headers.get("authorization"):
            self.require_admin(request)
            admin = True
        record = await durably(lambda: self.authority.revoke(
            body["serial"], body.get("reason", "unspecified"), admin=admin, proof_token=body.get("proof"),
            actor="admin" if admin else _actor(request)))
        return JSONResponse(record.to_json())

    async def list_certificates(self, request: Request) -> Response:
        self.require_admin(request)
        try:
            limit = min(int(request.query_params.get("limit", "100")), 1000)
            # the database takes 64-bit integers; past that there are no rows anyway
            offset = min(max(int(request.query_params.get("offset", "0")), 0), 2**62)
        except ValueError:
            raise BadRequest("limit and offset must be integers", code=Code.BAD_QUERY) from None
        if limit < 1:  # SQL reads a negative LIMIT as "no limit"
            raise BadRequest("limit must be 1 to 1000", code=Code.BAD_QUERY)
        status = request.query_params.get("status")
        records = await run_in_threadpool(self.authority.store.list, status, limit, offset)
        return JSONResponse({"certificates": [r.to_json() for r in records]})

    async def get_certificate(self, request: Request) -> Response:
        """The whole record for the administrator; without a token only its status (what OCSP
        would tell anyone): whether it is revoked or superseded, so ``trustyard check --ca-url``
        needs no credential. A wrong token is still refused."""
        admin = bool(request.headers.get("authorization"))
        if admin:
            self.require_admin(request)
        serial = request.path_params["serial"]
        record = await run_in_threadpool(self.authority.get, serial)
        if record is None:
            from ..errors import NotFound

            raise NotFound(f"no certificate with serial {serial}")
        doc = record.to_json()
        if not admin:
            return JSONResponse({k: doc[k] for k in PUBLIC_STATUS})
        if record.der:
            from cryptography import x509

            doc["certificate"] = _pem(x509.load_der_x509_certificate(record.der))
        return JSONResponse(doc)

    async def checkin(self, request: Request) -> Response:
        """A relying party's check-in (``ca.fleet``): no fsync, no audit entry; a refusal changes nothing."""
        body = await self.json_body(request, {"proof"}, set())
        answer = await run_in_threadpool(self.fleet.checkin, body["proof"])
        return JSONResponse(answer.to_json())

    async def list_fleet(self, request: Request) -> Response:
        self.require_admin(request)
        stale = request.query_params.get("stale", "") in ("1", "true")
        parties = await run_in_threadpool(self.fleet.view, stale)
        return JSONResponse({"parties": parties})

    async def healthz(self, request: Request) -> Response:
        problems = await run_in_threadpool(self._health_problems)
        status = 200 if not problems else 503
        return JSONResponse({"status": "ok" if not problems else "unhealthy", "problems": problems},
                            status_code=status)

    def _health_problems(self) -> list[str]:
        problems = []
        try:
            self.authority.store.counts()
        except Exception as exc:  # the database is what can fail at run time
            problems.append(f"database: {type(exc).__name__}")
        cert = self.authority.signer.certificate
        if cert.not_valid_after_utc <= self.authority.clock():
            problems.append("the intermediate has expired")
        return problems

    async def metrics_endpoint(self, request: Request) -> Response:
        await run_in_threadpool(self.authority.refresh)  # a due rotation poll queries the database
        certs = [("root", c) for c in self.authority.roots] + [("intermediate", self.authority.signer.certificate)]
        deadlines = await run_in_threadpool(self._rotation_deadlines)
        parties = await run_in_threadpool(self.fleet.parties)
        body = metrics.render(certs, deadlines) + metrics.render_fleet(parties, self.authority.clock())
        return Response(body, media_type="text/plain; version=0.0.4")

    def _rotation_deadlines(self) -> list[tuple[str, str, float]]:
        """(rotation, state, deadline) of the rotation in progress, for the alert on a stalled one."""
        from ..store.rotations import RotationStore

        try:
            row = RotationStore(self.authority.store).unfinished()
        except Exception:  # a store without the rotations table (tests on other ledgers)
            return []
        if row is None or row.deadline_at is None:
            return []
        return [(f"{row.kind}-{row.id}", row.state, row.deadline_at.timestamp())]

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(SPEC)


PUBLIC_STATUS = ("serial", "status", "not_after", "fingerprint_sha256", "revoked_at", "revocation_reason",
                 "superseded_by")
"""The fields of ``GET /v1/certificates/{serial}`` anyone may read (no names, no provisioner)."""


def _pem(cert: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


def _actor(request: Request) -> str:
    client = request.client
    return f"{client.host}" if client else "unknown"


def _issued_response(issued: Issued, current: bundle.Bundle) -> JSONResponse:
    """The certificate with the current trust bundle (``roots``) and its version."""
    return JSONResponse({
        "serial": issued.record.serial,
        "not_before": format_time(issued.record.not_before),
        "not_after": format_time(issued.record.not_after),
        "certificate": issued.certificate_pem,
        "chain": issued.chain_pem,
        "roots": current.pem,
        "bundle_version": current.version,
        "bundle_sha256": current.sha256,
    }, status_code=201)


BUNDLE_VERSION_HEADER = "Trustyard-Bundle-Version"
BUNDLE_SHA256_HEADER = "Trustyard-Bundle-Sha256"
ROOTS_MEDIA_TYPES = {"pem": "application/pem-certificate-chain", "p12": "application/x-pkcs12",
                     "jks": "application/x-java-keystore", "configmap": "application/yaml"}
_ACCEPTED = {"application/x-pkcs12": "p12", "application/pkcs12": "p12", "application/x-java-keystore": "jks",
             "application/yaml": "configmap", "application/x-yaml": "configmap"}


def _roots_format(request: Request) -> str:
    """``?format=`` when given (else a recognised Accept type, else pem)."""
    fmt = request.query_params.get("format")
    if fmt is None:
        accepted = [part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")]
        return next((_ACCEPTED[a] for a in accepted if a in _ACCEPTED), "pem")
    if fmt not in truststore.FORMATS:
        raise BadRequest(f"format must be one of {', '.join(truststore.FORMATS)}, not {fmt!r}", code="badQuery")
    return fmt


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, weak ones compared as strong (RFC 9110 weak comparison)."""
    tags = {t.strip() for t in header.split(",") if t.strip()}
    return {t[2:] if t.startswith("W/") else t for t in tags}


def _timed(route: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            metrics.LATENCY.labels(route).observe(time.perf_counter() - started)
    return wrapper


class CAApp(Starlette):
    """The CA's ASGI app: Starlette, which routes every request (ACME POSTs and OCSP included)
    through its middleware and exception handlers; this layer only names the client for the
    operations log."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        client = scope.get("client")
        token = oplog.client_address.set(client[0] if client else None)  # for the operations log
        try:
            await super().__call__(scope, receive, send)
        finally:
            oplog.client_address.reset(token)


def create_app(authority: Authority, config: Config | None = None) -> Starlette:
    fleet = Fleet(authority, FleetStore(authority.store),
                  max_per_second=config.max_checkins_per_second if config else 0,
                  flag_file=config.home / FLEET_FLAG_FILE if config else None)
    admission = Admission(*config.admission_limits()) if config else Admission()  # one per worker
    api = Api(authority, config.admin_token_sha256 if config else "",
              config.max_body_bytes if config else 64 * 1024, config.environment if config else "", fleet,
              admission)
    # One line per issuance, renewal, revocation and refusal (trustyard.ca), from what is recorded.
    authority.store.observers.append(oplog.OperationsLog().record)
    routes = [
        Route("/v1/roots", _timed("roots", api.roots), methods=["GET"]),
        Route("/v1/sign", _timed("sign", api.sign), methods=["POST"]),
        Route("/v1/renew", _timed("renew", api.renew), methods=["POST"]),
        Route("/v1/revoke", _timed("revoke", api.revoke), methods=["POST"]),
        Route("/v1/certificates", _timed("certificates", api.list_certificates), methods=["GET"]),
        Route("/v1/certificates/{serial}", _timed("certificate", api.get_certificate), methods=["GET"]),
        Route("/v1/checkin", _timed("checkin", api.checkin), methods=["POST"]),
        Route("/v1/fleet", _timed("fleet", api.list_fleet), methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {TrustyardError: trustyard_error, HTTPException: http_error, Exception: unexpected_error}
    responder = OcspResponder(authority)
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = [lambda: ocsp_upkeep(responder)]
    if config is not None:  # the ACME server (RFC 8555), one directory per provisioner of type "acme"
        from ..acme import AcmeFailure
        from .acme_routes import acme_failure, acme_routes
        from .crl_routes import crl_routes

        routes += crl_routes(authority, config)

        # First: the router tries routes in order, and ACME POSTs, eight to an order, are the
        # bulk of the traffic (behind the REST routes they paid ~6 us each in failed matches).
        routes[:0] = acme_routes(authority, config, admission)
        handlers[AcmeFailure] = acme_failure

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        running = [loop.create_task(task()) for task in tasks]
        try:
            yield
        finally:
            for task in running:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # OCSP first of all: its answers are cached bytes, so matching is a large share of its cost.
    ocsp = OcspEndpoint(responder)
    methods = ["GET", "HEAD", "POST"]
    routes[:0] = [Route(OCSP_PATH, ocsp, methods=methods), Route(OCSP_PATH + "/{request:path}", ocsp, methods=methods)]
    app = CAApp(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.api = api
    app.state.ocsp = responder
    return app


async def ocsp_upkeep(responder: OcspResponder) -> None:
    """The responder's ``tick`` every ``POLL_SECONDS``, in a thread (it reads the ledger and signs)."""
    loop = asyncio.get_running_loop()
    while True:
        await loop.run_in_executor(None, responder.tick)
        await asyncio.sleep(POLL_SECONDS)


PASSWORD_FILE_ENV = "TRUSTYARD_PASSWORD_FILE"
FLEET_FLAG_FILE = "fleet-retry-after"
"""In the CA home: while it exists, every check-in is answered ``retry-after N`` (N: its content)."""

LISTEN_ENV = "TRUSTYARD_LISTEN"
"""The address ``serve`` listens on (``--listen`` overrides trustyard.toml for one run)."""

SIGN_DELAY_ENV = "TRUSTYARD_TEST_SIGN_DELAY_MS"
"""A test knob: every signature takes this many milliseconds longer (``ca.signer.DelayedSigner``)."""


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: home from TRUSTYARD_HOME, password and listen address from the
    environment."""
    from ..ca.config import load_config, resolve_home
    from ..ca.home import load_authority, read_password

    home = resolve_home(None)
    config = load_config(home)
    if os.environ.get(LISTEN_ENV):
        config = replace(config, listen=os.environ[LISTEN_ENV])
    password = None
    if config.encrypted_keys:
        password = read_password(os.environ.get(PASSWORD_FILE_ENV), insecure_no_password=False)
    authority = load_authority(Path(home), password, config=config, migrate=False)  # `serve` migrated
    from ..ca.rotation_watch import watch

    watch(authority, config, password)  # a rotation's switch reaches this worker without a restart
    if os.environ.get(SIGN_DELAY_ENV):  # the crash tests' knob (ca.signer.DelayedSigner)
        from ..ca.signer import DelayedSigner

        material = authority.material
        delay_ms = float(os.environ[SIGN_DELAY_ENV])
        log.warning(
            "%s=%g: every signature is delayed by that many milliseconds (a test knob; unset it in production)",
            SIGN_DELAY_ENV, delay_ms)
        authority.use(replace(material, signer=DelayedSigner(material.signer, delay_ms / 1000)))
    app = create_app(authority, config)
    try:  # the intermediates rotations replaced: their certificates still get OCSP answers
        from ..ca.rotation_material import HomeMaterial
        from ..store.rotations import RotationStore

        app.state.ocsp.add_issuers(HomeMaterial(config, password, RotationStore(authority.store)).earlier_signers())
    except Exception:
        log.exception("OCSP: could not load the replaced intermediates; their certificates get unauthorized")
    # Everything loaded so far lives as long as the worker: keep it out of the cyclic GC's
    # scans, and collect less often (requests free their objects by reference counting);
    # full collections otherwise show up as latency spikes under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    return app
