"""The one exception hierarchy of trustyard.

    TrustyardError                 root; carries a stable ``code`` and an HTTP ``status``
    +-- BadRequest (400)           malformed input: JSON, CSR, PEM, fields
    +-- Unauthorized (401)         missing/invalid/expired/replayed credentials
    +-- PolicyDenied (403)         a policy rule refused a value (names the rule and value)
    +-- Forbidden (403)            authenticated but not allowed (not admin, revoked cert)
    +-- NotFound (404)
    +-- Conflict (409)             state forbids it (already revoked, CA exists)
    +-- ConfigError (500)          trustyard.toml or the home is wrong (CLI exit 2)

Errors are rendered in exactly two places: ``api.problems`` (RFC 7807 problem+json)
and ``cli`` (one line on stderr plus an exit status).
"""

from __future__ import annotations

from typing import Any


class TrustyardError(Exception):
    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:trustyard:error:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.fields)
        return body


class BadRequest(TrustyardError):
    status = 400
    code = "badRequest"
    title = "Bad request"


class Unauthorized(TrustyardError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(TrustyardError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class PolicyDenied(Forbidden):
    code = "policyDenied"
    title = "Refused by policy"

    def __init__(self, rule: str, value: Any, detail: str) -> None:
        super().__init__(detail, rule=rule, value=value)
        self.rule = rule
        self.value = value


class NotFound(TrustyardError):
    status = 404
    code = "notFound"
    title = "Not found"


class Conflict(TrustyardError):
    status = 409
    code = "conflict"
    title = "Conflict"


class ConfigError(TrustyardError):
    status = 500
    code = "config"
    title = "Configuration error"
