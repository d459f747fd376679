"""The envelope of every ACME POST (RFC 8555 section 6.2-6.5): who sent it, and its nonce.

    Envelope.check  no database: content type, size, the JWS and its protected header
                    (one of jwk/kid, url, nonce), and the signature when the key is at hand
                    (a jwk, or an account remembered from an earlier request)
    Envelope.open   in the request's transaction: the account a kid names, the signature with
                    its stored key, the nonce spent -> (the Caller, the fresh nonce)

A refusal from ``open`` after the nonce was spent carries the fresh nonce in the problem's
``Replay-Nonce`` header, so the client can go on without asking for a new one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ca.config import AcmeConfig
from .jws import Jwk, Jws, parse_jwk, parse_jws, signature_verifies, verify_signature
from .model import AccountRow, Urls
from .problems import AcmeCode, AcmeError

if TYPE_CHECKING:  # the store imports this package's rows: only its type is needed here
    from ..store.acme_store import AcmeStore

JOSE = "application/jose+json"
REPLAY_NONCE = "Replay-Nonce"
ACCOUNT_CACHE_SIZE = 10_000

# resource -> (needs jwk instead of kid, POST-as-GET only)
JWK_ONLY, KID_ONLY, EITHER = "jwk", "kid", "either"
RESOURCES: dict[str, tuple[str, bool | None]] = {
    "new-account": (JWK_ONLY, False),
    "account": (KID_ONLY, None),     # POST-as-GET or an update
    "key-change": (KID_ONLY, False),
    "new-order": (KID_ONLY, False),
    "order": (KID_ONLY, True),
    "finalize": (KID_ONLY, False),
    "orders": (KID_ONLY, True),
    "authz": (KID_ONLY, None),       # POST-as-GET or deactivation
    "chall": (KID_ONLY, None),       # POST-as-GET or {} to respond
    "cert": (KID_ONLY, True),
    "revoke-cert": (EITHER, False),
}


@dataclass(frozen=True)
class AcmeRequest:
    base_url: str           # scheme://host[:port] as the client addressed us
    provisioner: str
    resource: str           # a key of RESOURCES
    path: str               # the request path, e.g. /acme/acme/order/ID
    content_type: str
    body: bytes
    too_large: bool = False
    params: dict[str, str] = field(default_factory=dict)
    accept: str = ""
    source: str = ""        # the client, as refusals and nonces are counted (store.refusals.source_key)

    @property
    def url(self) -> str:
        return self.base_url + self.path


@dataclass
class AcmeResponse:
    status: int
    body: Any = None                # dict -> JSON, str -> text (PEM), None -> empty
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class AcmeFailure(Exception):
    """A POST failed for a reason that is not the client's (a bug, the database, the disk).

    The cause is chained (``__cause__``); ``answer`` is what the client gets: a serverInternal
    problem, with a fresh ``Replay-Nonce`` when one could be minted. Raised to the web layer,
    whose exception handling logs the cause and sends the answer."""

    def __init__(self, answer: AcmeResponse) -> None:
        super().__init__("internal error answering an ACME request")
        self.answer = answer


@dataclass
class Signed:
    """A POST that passed ``Envelope.check``: what ``Envelope.open`` still has to do."""

    jws: Jws
    urls: Urls
    as_get: bool | None
    nonce: str
    jwk: Jwk | None = None              # the verified key: a jwk, or a remembered account's
    account: AccountRow | None = None   # the remembered account the key came from


@dataclass(frozen=True)
class Caller:
    """Who sent an authenticated POST: the verified key, and its account (none for a jwk)."""

    jws: Jws
    jwk: Jwk
    account: AccountRow | None
    urls: Urls

    def payload(self) -> dict[str, Any]:
        return self.jws.payload_json()


class Envelope:
    """Opens the envelopes of one ACME server's POSTs; remembers the accounts it has seen."""

    def __init__(self, store: AcmeStore, config: AcmeConfig, provisioners: set[str], max_body_bytes: int) -> None:
        self.store = store
        self.config = config
        self.provisioners = provisioners
        self.max_body_bytes = max_body_bytes
        self._accounts: dict[str, AccountRow] = {}  # by id: see _known_account

    def urls(self, base_url: str, provisioner: str) -> Urls:
        """The URLs of ``provisioner``'s directory, if it has one."""
        if provisioner not in self.provisioners:
            raise AcmeError.not_found("ACME provisioner")
        return Urls(base_url, provisioner)

    def check(self, request: AcmeRequest) -> Signed:
        """Everything about a POST that needs no database: content type, size, the JWS and its
        protected header, and the signature when the key is a jwk or a remembered account's."""
        urls = self.urls(request.base_url, request.provisioner)
        if request.resource not in RESOURCES:
            raise AcmeError.not_found("resource")
        key_mode, as_get = RESOURCES[request.resource]
        if request.content_type != JOSE:
            raise AcmeError(AcmeCode.MALFORMED, f"Content-Type must be {JOSE}", status=415)
        if request.too_large or len(request.body) > self.max_body_bytes:
            raise AcmeError(AcmeCode.MALFORMED, f"the body is larger than {self.max_body_bytes} bytes", status=413)
        jws = parse_jws(request.body)
        header = jws.header
        has_jwk, has_kid = "jwk" in header, "kid" in header
        if has_jwk == has_kid:
            raise AcmeError(AcmeCode.MALFORMED, "the protected header must have exactly one of jwk and kid")
        if key_mode == JWK_ONLY and not has_jwk:
            raise AcmeError(AcmeCode.MALFORMED, f"{request.resource} must be signed with a jwk, not a kid")
        if key_mode == KID_ONLY and not has_kid:
            raise AcmeError(AcmeCode.MALFORMED, f"{request.resource} must be signed with the account's kid")
        url = header.get("url")
        if not isinstance(url, str):
            raise AcmeError(AcmeCode.MALFORMED, "the protected header has no url")
        if url != request.url:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "the url header does not match the request URL")
        nonce = header.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise AcmeError(AcmeCode.BAD_NONCE, "the protected header has no nonce")
        signed = Signed(jws, urls, as_get, nonce[:64])
        if has_jwk:
            signed.jwk = parse_jwk(header["jwk"])
            verify_signature(jws, signed.jwk)
            return signed
        account = self._known_account(urls, header["kid"], request.resource)
        if account is not None:  # from an earlier request: the redemption checks it still holds
            jwk = stored_jwk(account.jwk)
            if signature_verifies(jws, jwk):
                signed.jwk, signed.account = jwk, account
            else:  # perhaps a new key: the full path finds out
                self._accounts.pop(account.id, None)
        return signed

    def open(self, request: AcmeRequest, signed: Signed) -> tuple[Caller, str]:
        """The part that needs the database: the account and the nonce. The caller, and the
        fresh nonce the answer carries (a refusal past the nonce carries it as a header)."""
        jws, urls = signed.jws, signed.urls
        if signed.account is not None:
            fresh = self.store.redeem_nonce_as(signed.nonce, signed.account.id, signed.account.thumbprint)
            if fresh is not None:
                return _caller(jws, signed.jwk, signed.account, urls, signed.as_get, fresh), fresh  # type: ignore[arg-type]
            # A changed account or a bad nonce: the full path finds out which.
            self._accounts.pop(signed.account.id, None)
        account = None
        jwk = signed.jwk
        if "kid" in jws.header:
            account = self._account_for_kid(urls, jws.header["kid"])
            jwk = stored_jwk(account.jwk)
            verify_signature(jws, jwk)
        assert jwk is not None  # a jwk request was verified by check
        ok, fresh = self.store.redeem_nonce(signed.nonce, self.config.nonce_reject_percent, request.source,
                                            self.config.nonces_per_client)
        if not ok:
            raise _with_nonce(AcmeError(AcmeCode.BAD_NONCE, "the nonce is unknown, expired or already used"), fresh)
        if account is not None:
            self._remember(account)
        return _caller(jws, jwk, account, urls, signed.as_get, fresh), fresh

    def _known_account(self, urls: Urls, kid: Any, resource: str) -> AccountRow | None:
        """The account a kid named in an earlier request, when this request may use it.

        Only its id, key and status matter to the other resources, and ``redeem_nonce_as``
        checks the key and status against the database in the same statement that spends
        the nonce. The account resource itself and key rollover read it afresh; so does
        the rejection test knob's path."""
        if resource in ("account", "key-change") or self.config.nonce_reject_percent > 0 or not isinstance(kid, str):
            return None
        prefix = urls.root + "/account/"
        account = self._accounts.get(kid[len(prefix):]) if kid.startswith(prefix) else None
        return account if account is not None and account.provisioner == urls.provisioner else None

    def _remember(self, account: AccountRow) -> None:
        if len(self._accounts) >= ACCOUNT_CACHE_SIZE:
            self._accounts.pop(next(iter(self._accounts)))  # the oldest entry
        self._accounts[account.id] = account

    def _account_for_kid(self, urls: Urls, kid: Any) -> AccountRow:
        prefix = urls.root + "/account/"
        if not isinstance(kid, str) or not kid.startswith(prefix) or "/" in kid[len(prefix):]:
            raise AcmeError(AcmeCode.ACCOUNT_DOES_NOT_EXIST, "the kid is not an account URL of this directory")
        account = self.store.get_account(kid[len(prefix):])
        if account is None or account.provisioner != urls.provisioner:
            raise AcmeError(AcmeCode.ACCOUNT_DOES_NOT_EXIST, "no account with this kid")
        if account.status != "valid":
            raise AcmeError(AcmeCode.UNAUTHORIZED, f"the account is {account.status}")
        return account


def _caller(jws: Jws, jwk: Jwk, account: AccountRow | None, urls: Urls, as_get: bool | None, fresh: str) -> Caller:
    """The caller, once the payload has the shape the resource takes (else a refusal that
    carries the ``fresh`` nonce: the one sent is spent)."""
    try:
        if as_get is True and jws.payload != b"":
            raise AcmeError(AcmeCode.MALFORMED, "this resource takes POST-as-GET (an empty payload)")
        if as_get is False and jws.payload == b"":
            raise AcmeError(AcmeCode.MALFORMED, "this resource needs a JSON payload")
        if jws.payload:
            jws.payload_json()  # fail early on a payload that is not an object
    except AcmeError as exc:
        raise _with_nonce(exc, fresh) from None
    return Caller(jws, jwk, account, urls)


def _with_nonce(error: AcmeError, fresh: str) -> AcmeError:
    error.headers[REPLAY_NONCE] = fresh
    return error


@functools.lru_cache(maxsize=4096)
def stored_jwk(text: str) -> Jwk:
    """An account's stored key, parsed once per worker (a pure function of the stored JSON)."""
    return parse_jwk(json.loads(text))
