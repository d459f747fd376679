"""ACME problem documents (RFC 8555 section 6.7) as exceptions.

``AcmeError(AcmeCode.BAD_NONCE, "...")`` renders as ``urn:ietf:params:acme:error:badNonce`` with the
HTTP status the RFC (or common practice, where it is silent) gives that type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from ..errors import Code, NotFound, PolicyDenied, TrustyardError

ACME_URN = "urn:ietf:params:acme:error:"


class AcmeCode(StrEnum):
    """The ACME error types (RFC 8555 section 6.7 and its registry) this server raises or may raise:
    ``urn:ietf:params:acme:error:<value>``. An ``AcmeError`` of any other kind is a ``ValueError``."""

    ACCOUNT_DOES_NOT_EXIST = "accountDoesNotExist"
    ALREADY_REPLACED = "alreadyReplaced"
    ALREADY_REVOKED = "alreadyRevoked"
    BAD_C_S_R = "badCSR"
    BAD_NONCE = "badNonce"
    BAD_PUBLIC_KEY = "badPublicKey"
    BAD_REVOCATION_REASON = "badRevocationReason"
    BAD_SIGNATURE_ALGORITHM = "badSignatureAlgorithm"
    CAA = "caa"
    COMPOUND = "compound"
    CONNECTION = "connection"
    DNS = "dns"
    EXTERNAL_ACCOUNT_REQUIRED = "externalAccountRequired"
    INCORRECT_RESPONSE = "incorrectResponse"
    INVALID_CONTACT = "invalidContact"
    MALFORMED = "malformed"
    ORDER_NOT_READY = "orderNotReady"
    RATE_LIMITED = "rateLimited"
    REJECTED_IDENTIFIER = "rejectedIdentifier"
    SERVER_INTERNAL = "serverInternal"
    TLS = "tls"
    UNAUTHORIZED = "unauthorized"
    UNSUPPORTED_CONTACT = "unsupportedContact"
    UNSUPPORTED_IDENTIFIER = "unsupportedIdentifier"
    USER_ACTION_REQUIRED = "userActionRequired"


# The HTTP status of each type: the RFC's, or common practice where it is silent.
STATUS: dict[AcmeCode, int] = {
    AcmeCode.ACCOUNT_DOES_NOT_EXIST: 400,
    AcmeCode.ALREADY_REPLACED: 409,
    AcmeCode.ALREADY_REVOKED: 400,
    AcmeCode.BAD_C_S_R: 400,
    AcmeCode.BAD_NONCE: 400,
    AcmeCode.BAD_PUBLIC_KEY: 400,
    AcmeCode.BAD_REVOCATION_REASON: 400,
    AcmeCode.BAD_SIGNATURE_ALGORITHM: 400,
    AcmeCode.CAA: 403,
    AcmeCode.COMPOUND: 400,
    AcmeCode.CONNECTION: 400,
    AcmeCode.DNS: 400,
    AcmeCode.EXTERNAL_ACCOUNT_REQUIRED: 400,
    AcmeCode.INCORRECT_RESPONSE: 403,
    AcmeCode.INVALID_CONTACT: 400,
    AcmeCode.MALFORMED: 400,
    AcmeCode.ORDER_NOT_READY: 403,
    AcmeCode.RATE_LIMITED: 429,
    AcmeCode.REJECTED_IDENTIFIER: 400,
    AcmeCode.SERVER_INTERNAL: 500,
    AcmeCode.TLS: 400,
    AcmeCode.UNAUTHORIZED: 403,
    AcmeCode.UNSUPPORTED_CONTACT: 400,
    AcmeCode.UNSUPPORTED_IDENTIFIER: 400,
    AcmeCode.USER_ACTION_REQUIRED: 403,
}


class AcmeError(TrustyardError):
    vocabulary: ClassVar[type[StrEnum]] = AcmeCode
    title = "ACME error"

    def __init__(self, kind: str, detail: str, *, status: int | None = None,
                 subproblems: list[dict[str, Any]] | None = None, **fields: Any) -> None:
        super().__init__(detail, code=kind, **fields)
        self.kind = AcmeCode(self.code)
        self.status = status or STATUS[self.kind]
        self.subproblems = subproblems or []
        self.headers: dict[str, str] = {}

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": ACME_URN + self.kind, "detail": self.detail, "status": self.status}
        if self.subproblems:
            body["subproblems"] = self.subproblems
        body.update(self.fields)
        return body

    @classmethod
    def not_found(cls, what: str) -> AcmeError:
        return cls(AcmeCode.MALFORMED, f"no such {what}", status=404)

    @classmethod
    def internal(cls) -> AcmeError:
        """A failure of ours: the client learns only that; the details go to the log."""
        return cls(AcmeCode.SERVER_INTERNAL, "internal error; the server log has the details")


def subproblem(kind: str, detail: str, identifier: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": ACME_URN + AcmeCode(kind), "detail": detail}
    if identifier:
        doc["identifier"] = identifier
    return doc


def from_authority(exc: AcmeError) -> bool:
    """The ACME form of the authority's refusal (finalize, revoke), which the authority audited."""
    return isinstance(exc.__context__, TrustyardError) and not isinstance(exc.__context__, AcmeError)


def from_trustyard(exc: TrustyardError) -> AcmeError:
    """The ACME problem for a refusal raised below the protocol (authority, policy, store)."""
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, PolicyDenied):
        kind = (AcmeCode.REJECTED_IDENTIFIER if exc.rule in ("names_allowed", "has_names", "dns_names_are_not_ips")
                else AcmeCode.BAD_C_S_R)
        return AcmeError(kind, exc.detail)
    if isinstance(exc, NotFound):
        return AcmeError(AcmeCode.MALFORMED, exc.detail, status=404)
    if exc.status >= 500:
        return AcmeError.internal()
    bad_csr = (Code.BAD_CSR, Code.BAD_SIGNATURE, Code.BAD_NAME, Code.KEY_BLOCKED)  # blocked: an emergency's key
    return AcmeError(AcmeCode.BAD_C_S_R if exc.code in bad_csr else AcmeCode.MALFORMED, exc.detail)
