"""The one exception hierarchy of trustyard, the closed vocabulary of its error codes, and the
CLI's exit statuses.

    TrustyardError                 root; carries a stable ``code`` and an HTTP ``status``
    +-- BadRequest (400)           malformed input: JSON, CSR, PEM, fields
    +-- Unauthorized (401)         missing/invalid/expired/replayed credentials
    +-- PolicyDenied (403)         a policy rule refused a value (names the rule and value)
    +-- Forbidden (403)            authenticated but not allowed (not admin, revoked cert)
    +-- NotFound (404)
    +-- Conflict (409)             state forbids it (already revoked, CA exists)
    +-- Overloaded (503)           the CA sheds signing load; ``retry_after`` seconds go in Retry-After
    +-- ConfigError (500)          trustyard.toml or the home is wrong (CLI exit 2)

Every code is a member of :class:`Code` (``urn:trustyard:error:<code>`` on the wire): the CA
raises them and the client and the agent compare against the same constants, so the two sides
cannot spell one differently. A code outside the vocabulary is a ``ValueError`` when the error
is constructed (or its class defined). ACME problem types have their own closed vocabulary,
``acme.problems.AcmeCode``.

Errors are rendered in exactly two places: ``api.problems`` (RFC 7807 problem+json)
and ``cli`` (one line on stderr plus an :class:`ExitCode`).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, ClassVar


class Code(StrEnum):
    """The codes of trustyard's errors; the value is what travels (problem ``type``, CLI ``[code]``)."""

    # the hierarchy's own
    INTERNAL = "internal"
    BAD_REQUEST = "badRequest"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    POLICY_DENIED = "policyDenied"
    NOT_FOUND = "notFound"
    CONFLICT = "conflict"
    CONFIG = "config"
    # the HTTP edge (api/)
    METHOD_NOT_ALLOWED = "methodNotAllowed"
    HTTP_ERROR = "httpError"
    UNSUPPORTED_MEDIA_TYPE = "unsupportedMediaType"
    BODY_TOO_LARGE = "bodyTooLarge"
    INCOMPLETE_BODY = "incompleteBody"
    MALFORMED_JSON = "malformedJSON"
    UNKNOWN_FIELD = "unknownField"
    MISSING_FIELD = "missingField"
    BAD_FIELD = "badField"
    BAD_QUERY = "badQuery"
    NOT_ADMIN = "notAdmin"
    REQUEST_TIMEOUT = "requestTimeout"
    TOO_MANY_CONNECTIONS = "tooManyConnections"
    OVERLOADED = "overloaded"  # the signing queue is deeper than the latency target allows (503, Retry-After)
    DATABASE_UNAVAILABLE = "databaseUnavailable"  # the database is out of reach, restarting (503, Retry-After)
    # requests the authority refuses (ca/, store/)
    BAD_CSR = "badCSR"
    BAD_SIGNATURE = "badSignature"
    BAD_NAME = "badName"
    UNSUPPORTED_KEY = "unsupportedKey"
    BAD_TTL = "badTTL"
    BAD_TOKEN = "badToken"
    TOKEN_EXPIRED = "tokenExpired"
    TOKEN_REPLAYED = "tokenReplayed"
    # the same token or renewal is being signed right now (503, Retry-After): its retry gets the certificate
    REDEMPTION_IN_PROGRESS = "redemptionInProgress"
    TOKEN_NAME_MISMATCH = "tokenNameMismatch"
    BAD_PROOF = "badProof"
    IDENTITY_MISMATCH = "identityMismatch"
    UNKNOWN_CERTIFICATE = "unknownCertificate"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"
    BOOTSTRAP_REQUIRED = "bootstrapRequired"  # renewal refused: the holder must bootstrap with a new token (403)
    ALREADY_REVOKED = "alreadyRevoked"
    BAD_REVOCATION_REASON = "badRevocationReason"
    # an emergency replacement (ca/emergency.py)
    KEY_BLOCKED = "keyBlocked"  # the CSR's public key belongs to a certificate an emergency replaces
    EMERGENCY_SELECTION = "emergencySelection"  # the selector matched nothing, or everything without --all
    NO_EMERGENCY = "noEmergency"
    # the CA's home and configuration
    NO_CA = "noCA"
    CA_EXISTS = "caExists"
    NO_PASSWORD = "noPassword"
    BAD_PASSWORD = "badPassword"
    # the client and the agent
    CA_UNAVAILABLE = "caUnavailable"
    UNTRUSTED_SERVER = "untrustedServer"
    FINGERPRINT_MISMATCH = "fingerprintMismatch"
    SYMLINK_REFUSED = "symlinkRefused"
    LOCAL_FILE = "localFile"
    # mTLS authorization (tls/)
    AMBIGUOUS_PATH = "ambiguousPath"
    IDENTITY_NOT_ALLOWED = "identityNotAllowed"
    # trustyard check (check.py)
    ROTATION_GATE = "rotationGate"  # a rotation step refused: its gate is closed (the detail says why)
    ROTATION_IN_PROGRESS = "rotationInProgress"
    ROTATION_MOVED = "rotationMoved"
    NO_ROTATION = "noRotation"
    CHECK_FAILED = "checkFailed"
    CHECK_INPUT = "checkInput"
    KEY_MISMATCH = "keyMismatch"
    CHAIN = "chain"
    VALIDITY = "validity"
    TIME_LEFT = "timeLeft"
    IS_CA = "isCA"
    USAGE = "usage"
    NAME = "name"
    STATUS_UNKNOWN = "statusUnknown"
    # migrating off self-signed certificates (migrate/)
    MIGRATE_LOCATION = "migrateLocation"  # a location cannot be read or written (names it)
    LOCATION_CHANGED = "locationChanged"  # a file changed since the plan or the last step recorded it
    MIGRATE_BLOCKED = "migrateBlocked"  # a step's check failed; the detail says what to fix
    MIGRATE_BUSY = "migrateBusy"  # another process is moving the boundary (its lock names the pid)


class ExitCode(IntEnum):
    """Every exit status of the ``trustyard`` command, one meaning each (:data:`EXIT_MEANINGS`,
    shown by ``trustyard --help``)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NEEDS_TOKEN = 3
    UNKNOWN = 4
    GATE_CLOSED = 5
    NOTHING_SELECTED = 6
    CHECK_INPUT = 9
    KEY_MISMATCH = 10
    CHAIN = 11
    VALIDITY = 12
    TIME_LEFT = 13
    IS_CA = 14
    WRONG_USAGE = 15
    NAME_MISMATCH = 16
    REVOKED = 17
    STATUS_UNKNOWN = 18
    ABORTED = 130


EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success; what was checked is healthy",
    ExitCode.FAILED: "failed: not healthy, refused by the CA, or the CA unreachable (agent: retried later)",
    ExitCode.USAGE: "fix the invocation: flags, configuration or local files (agent: settings the CA refuses)",
    ExitCode.NEEDS_TOKEN: "agent: only a new bootstrap token helps",
    ExitCode.UNKNOWN: "explain: the text matches no known error",
    ExitCode.GATE_CLOSED: "rotate: the step was refused, its gate is closed (the message names why)",
    ExitCode.NOTHING_SELECTED: ("emergency: the selector matched no unexpired certificate, or every one without "
                                "--all; nothing changed"),
    ExitCode.CHECK_INPUT: "check: a file is missing or not a certificate, key or bundle",
    ExitCode.KEY_MISMATCH: "check: the key does not belong to the certificate",
    ExitCode.CHAIN: "check: no valid path to the trust bundle",
    ExitCode.VALIDITY: "check: expired or not yet valid",
    ExitCode.TIME_LEFT: "check: less time left than --min-remaining",
    ExitCode.IS_CA: "check: the certificate is a CA",
    ExitCode.WRONG_USAGE: "check: key usage does not allow server (client) auth",
    ExitCode.NAME_MISMATCH: "check: the name is not among the certificate's SANs",
    ExitCode.REVOKED: "check: the CA says the certificate is revoked",
    ExitCode.STATUS_UNKNOWN: "check: the CA could not give the status",
    ExitCode.ABORTED: "interrupted",
}


def exit_table() -> str:
    """The exit statuses as lines for a help text."""
    return "\n".join(f"{int(code):>3}  {EXIT_MEANINGS[code]}" for code in ExitCode)


class TrustyardError(Exception):
    vocabulary: ClassVar[type[StrEnum]] = Code
    status = 500
    code: str = Code.INTERNAL
    title = "Internal error"
    code_shown: ClassVar[bool] = True  # False: the CLI line carries no ``[code]`` (a local problem)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            cls.code = cls.checked(cls.code)

    def __init__(self, detail: str, *, code: str | None = None, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = self.checked(code)
        self.fields = fields

    @classmethod
    def checked(cls, code: str) -> str:
        """``code`` as a member of the class's vocabulary; a ``ValueError`` names any other."""
        try:
            return cls.vocabulary(code)
        except ValueError:
            raise ValueError(f"{code!r} is not a code of {cls.vocabulary.__qualname__} "
                             f"({cls.__module__}.{cls.__qualname__})") from None

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
    code = Code.BAD_REQUEST
    title = "Bad request"


class Unauthorized(TrustyardError):
    status = 401
    code = Code.UNAUTHORIZED
    title = "Unauthorized"


class Forbidden(TrustyardError):
    status = 403
    code = Code.FORBIDDEN
    title = "Forbidden"


class PolicyDenied(Forbidden):
    code = Code.POLICY_DENIED
    title = "Refused by policy"

    def __init__(self, rule: str, value: Any, detail: str) -> None:
        super().__init__(detail, rule=rule, value=value)
        self.rule = rule
        self.value = value


class NotFound(TrustyardError):
    status = 404
    code = Code.NOT_FOUND
    title = "Not found"


class Conflict(TrustyardError):
    status = 409
    code = Code.CONFLICT
    title = "Conflict"


class Overloaded(TrustyardError):
    """A signing request refused before any work because the queue is too deep; the client may
    send the same request again after ``retry_after`` seconds (the Retry-After header)."""

    status = 503
    code = Code.OVERLOADED
    title = "Overloaded"

    def __init__(self, detail: str, retry_after: int, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.retry_after = max(1, int(retry_after))


class RotationRefused(Conflict):
    """A rotation step whose gate is closed, or that its state does not allow; the CLI exits
    with ``ExitCode.GATE_CLOSED``."""

    code = Code.ROTATION_GATE
    title = "Rotation step refused"
    exit_code = ExitCode.GATE_CLOSED


class SelectionRefused(Conflict):
    """An emergency whose selector matched nothing, or everything without ``--all``: nothing
    changed; the CLI exits with ``ExitCode.NOTHING_SELECTED``."""

    code = Code.EMERGENCY_SELECTION
    title = "Emergency selection refused"
    exit_code = ExitCode.NOTHING_SELECTED


class ConfigError(TrustyardError):
    status = 500
    code = Code.CONFIG
    title = "Configuration error"
