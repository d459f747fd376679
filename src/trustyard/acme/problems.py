"""ACME problem documents (RFC 8555 section 6.7) as exceptions.

``AcmeError("badNonce", "...")`` renders as ``urn:ietf:params:acme:error:badNonce`` with the
HTTP status the RFC (or common practice, where it is silent) gives that type.
"""

from __future__ import annotations

from typing import Any

from ..errors import TrustyardError

ACME_URN = "urn:ietf:params:acme:error:"

STATUS = {
    "accountDoesNotExist": 400,
    "alreadyReplaced": 409,
    "alreadyRevoked": 400,
    "badCSR": 400,
    "badNonce": 400,
    "badPublicKey": 400,
    "badRevocationReason": 400,
    "badSignatureAlgorithm": 400,
    "caa": 403,
    "compound": 400,
    "connection": 400,
    "dns": 400,
    "externalAccountRequired": 400,
    "incorrectResponse": 403,
    "invalidContact": 400,
    "malformed": 400,
    "orderNotReady": 403,
    "rateLimited": 429,
    "rejectedIdentifier": 400,
    "serverInternal": 500,
    "tls": 400,
    "unauthorized": 403,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "userActionRequired": 403,
}


class AcmeError(TrustyardError):
    title = "ACME error"

    def __init__(self, kind: str, detail: str, *, status: int | None = None,
                 subproblems: list[dict[str, Any]] | None = None, **fields: Any) -> None:
        super().__init__(detail, code=kind, **fields)
        self.kind = kind
        self.status = status or STATUS.get(kind, 400)
        self.subproblems = subproblems or []
        self.headers: dict[str, str] = {}

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": ACME_URN + self.kind, "detail": self.detail, "status": self.status}
        if self.subproblems:
            body["subproblems"] = self.subproblems
        body.update(self.fields)
        return body

    @classmethod
    def not_found(cls, what: str) -> "AcmeError":
        return cls("malformed", f"no such {what}", status=404)

    @classmethod
    def internal(cls) -> "AcmeError":
        """A failure of ours: the client learns only that; the details go to the log."""
        return cls("serverInternal", "internal error; the server log has the details")


def subproblem(kind: str, detail: str, identifier: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": ACME_URN + kind, "detail": detail}
    if identifier:
        doc["identifier"] = identifier
    return doc
