"""RFC 7807 rendering: every error leaves the server as application/problem+json."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import Code, Overloaded, TrustyardError
from ..store import outage

log = logging.getLogger("trustyard.api")

PROBLEM = "application/problem+json"


def problem_response(exc: TrustyardError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM, headers=headers)


async def trustyard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TrustyardError)
    if isinstance(exc, Overloaded):  # load shed on purpose: counted (api.metrics), not an error to log
        return problem_response(exc, {"Retry-After": str(exc.retry_after)})
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return problem_response(exc)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if outage.unavailable(exc):  # a restart or failover of the database: sending it again is safe
        log.warning("%s %s: the database is out of reach: %s", request.method, request.url.path, exc)
        unavailable = TrustyardError("the database is out of reach (restarting?); send the same request again "
                                     "after Retry-After", code=Code.DATABASE_UNAVAILABLE)
        unavailable.status, unavailable.title = 503, "Database unavailable"
        return problem_response(unavailable, {"Retry-After": str(outage.RETRY_AFTER_SECONDS)})
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = TrustyardError("internal error; the server log has the details")
    return problem_response(error)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    code = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED}.get(status, Code.HTTP_ERROR)
    error = TrustyardError(str(getattr(exc, "detail", "")) or "error", code=code)
    error.status = status
    error.title = {404: "Not found", 405: "Method not allowed"}.get(status, "HTTP error")
    return problem_response(error, getattr(exc, "headers", None))  # a 405 keeps its Allow
