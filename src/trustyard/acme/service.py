"""The ACME protocol steps (RFC 8555 section 7), one method per resource, framework-free.

    AcmeRequest --authenticate (content type, size, JWS, url, key, signature, nonce)-->
    handler (accounts, orders, authorizations, challenges, finalize, certificates, revocation)
    --> AcmeResponse (every POST response carries a fresh Replay-Nonce, errors included)

Issuance goes through ``Authority.issue_for_order``: the provisioner's policy, the ledger and
the audit log are the REST API's.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import ssl
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from cryptography import x509

from ..ca.authority import REVOCATION_REASONS, Authority
from ..ca.config import AcmeConfig
from ..errors import Conflict, NotFound, PolicyDenied, TrustyardError
from ..store import AuditEvent, refusals
from ..x509.csr import CSRError, parse_csr
from ..x509.names import Name, name_text, normalize_dns, parse_name, reads_as_ip
from ..x509.summary import serial_hex
from . import ari
from .challenges import challenge_types, key_authorization
from .jws import Jwk, Jws, b64d, jwk_of, parse_jwk, parse_jws, signature_verifies, verify_eab, verify_signature
from .model import (AccountRow, AuthzRow, ChallengeRow, NewAuthz, OrderRow, Urls, account_json, authz_json, authz_status,
                    challenge_json, order_json, order_status)
from .problems import AcmeError, subproblem
from .validation import Probe, ValidationAuthority, ValidationLimited

if TYPE_CHECKING:  # the store imports this package's rows: only its type is needed here
    from ..store.acme_store import AcmeStore

log = logging.getLogger("trustyard.acme")

JOSE = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
ORDER_LIFETIME = timedelta(hours=1)
MAX_IDENTIFIERS = 100
ACCOUNT_CACHE_SIZE = 10_000
# RFC 5280 CRLReason codes ACME clients send, to the authority's names (8, removeFromCRL, is not a reason).
REASON_CODES = {0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
                4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 9: "privilegeWithdrawn",
                10: "aACompromise"}
assert set(REASON_CODES.values()) <= set(REVOCATION_REASONS)

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


@dataclass
class _Signed:
    """A POST that passed ``AcmeService._check``: what authentication still has to do."""

    jws: Jws
    urls: Urls
    as_get: bool | None
    nonce: str
    jwk: Jwk | None = None              # the verified key: a jwk, or a remembered account's
    account: AccountRow | None = None   # the remembered account the key came from


@dataclass(frozen=True)
class _Caller:
    jws: Jws
    jwk: Jwk
    account: AccountRow | None
    urls: Urls

    def payload(self) -> dict[str, Any]:
        return self.jws.payload_json()


class AcmeService:
    def __init__(self, authority: Authority, store: AcmeStore, config: AcmeConfig, provisioners: set[str],
                 validation: ValidationAuthority, max_body_bytes: int = 64 * 1024,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.authority = authority
        self.store = store
        self.config = config
        self.provisioners = provisioners
        self.va = validation
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self._accounts: dict[str, AccountRow] = {}  # by id: see _known_account

    # -- unauthenticated resources ------------------------------------------------------------

    def directory(self, base_url: str, provisioner: str) -> AcmeResponse:
        urls = self._urls(base_url, provisioner)
        return AcmeResponse(200, {
            "newNonce": urls.resource("new-nonce"), "newAccount": urls.resource("new-account"),
            "newOrder": urls.resource("new-order"), "revokeCert": urls.resource("revoke-cert"),
            "keyChange": urls.resource("key-change"), "renewalInfo": urls.resource("renewal-info"),
            "meta": {"externalAccountRequired": bool(self.config.eab.get(provisioner)),
                     "website": "https://github.com/trustyard"},
        })

    def new_nonce(self, base_url: str, provisioner: str, method: str, source: str = "") -> AcmeResponse:
        urls = self._urls(base_url, provisioner)
        nonce = self.store.mint_nonce(retry=True, source=source, keep=self.config.nonces_per_client)
        return AcmeResponse(200 if method == "HEAD" else 204, None,
                            headers={"Replay-Nonce": nonce, "Cache-Control": "no-store",
                                     "Link": f'<{urls.directory()}>;rel="index"'})

    def renewal_info(self, base_url: str, provisioner: str, cert_id_text: str) -> AcmeResponse:
        self._urls(base_url, provisioner)
        cid = ari.parse_cert_id(cert_id_text)
        ski = self.authority.signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        record = self.authority.get(cid.serial_hex)
        if cid.key_identifier != ski.value.key_identifier or record is None or record.status == "pending":
            raise AcmeError.not_found("certificate")
        window = ari.suggested_window(record.not_before, record.not_after, record.status == "revoked", self.clock())
        return AcmeResponse(200, {"suggestedWindow": {"start": _rfc3339(window.start), "end": _rfc3339(window.end)}},
                            headers={"Retry-After": str(int(window.retry_after.total_seconds()))})

    # -- POST ---------------------------------------------------------------------------------

    def post(self, request: AcmeRequest) -> AcmeResponse:
        """Any POST: authenticate, dispatch, and always hand back a fresh nonce.

        What needs no database happens first (``_check``: the request's shape and, when the key
        is at hand, its signature); the rest runs in one database transaction
        (``AcmeStore.unit``), which on SQLite holds the write lock, so the lock is not held
        while a signature is verified."""
        try:
            signed: _Signed | AcmeError = self._check(request)
        except AcmeError as exc:
            signed = exc
        except Exception:  # a bug, not the client: still a problem document with a nonce
            log.exception("ACME %s: checking the request failed", request.resource)
            signed = AcmeError.internal()
        try:
            with self.store.unit():
                return self._post(request, signed)
        except Exception:  # the transaction itself failed (begin or commit): nothing was promised
            log.exception("ACME %s: the database transaction failed", request.resource)
            return _problem(AcmeError.internal())

    def _post(self, request: AcmeRequest, signed: _Signed | AcmeError) -> AcmeResponse:
        fresh: list[str] = []
        caller = None
        try:
            if isinstance(signed, AcmeError):
                raise signed
            caller = self._authenticate(request, signed, fresh)
            response = getattr(self, "_" + request.resource.replace("-", "_"))(request, caller)
        except AcmeError as exc:
            response = _problem(exc)
            if caller is None:  # never authenticated: counted, not audited one by one
                self._refused(request, exc.kind, exc.detail)
            elif not _from_authority(exc):  # an account's request the protocol refuses: logged, not audited
                self.store.sql.tell(AuditEvent(
                    actor=f"acme:{caller.account.id}" if caller.account else f"acme:jwk:{caller.jwk.thumbprint[:16]}",
                    action="request.deny",
                    target=f"acme.{request.resource}", outcome="refused",
                    detail={"code": exc.kind, "reason": exc.detail[:500]}))
        except TrustyardError as exc:  # from the authority: map to the closest ACME type
            response = _problem(_from_trustyard(exc))
        except Exception:
            log.exception("ACME %s failed", request.resource)
            response = _problem(AcmeError.internal())
        if fresh:
            nonce = fresh[0]
        else:
            try:
                nonce = self.store.mint_nonce(retry=True, source=request.source, keep=self.config.nonces_per_client)
            except Exception:  # the database is down: the problem document still goes out
                log.exception("cannot mint a nonce")
                return response
        response.headers["Replay-Nonce"] = nonce
        if request.provisioner in self.provisioners:
            response.headers.setdefault("Link", f'<{Urls(request.base_url, request.provisioner).directory()}>'
                                                ';rel="index"')
        response.headers["Cache-Control"] = "no-store"
        return response

    def _refused(self, request: AcmeRequest, kind: str, message: str = "") -> None:
        try:
            refusals.note(self.store.sql, request.source or "unknown", f"acme.{request.resource}:{kind}",
                          message=message[:500])
        except Exception:  # the count is not worth failing the answer for
            log.exception("cannot count a refusal")

    def _check(self, request: AcmeRequest) -> _Signed:
        """Everything about a POST that needs no database: content type, size, the JWS and its
        protected header, and the signature when the key is a jwk or a remembered account's."""
        urls = self._urls(request.base_url, request.provisioner)
        if request.resource not in RESOURCES:
            raise AcmeError.not_found("resource")
        key_mode, as_get = RESOURCES[request.resource]
        if request.content_type != JOSE:
            raise AcmeError("malformed", f"Content-Type must be {JOSE}", status=415)
        if request.too_large or len(request.body) > self.max_body_bytes:
            raise AcmeError("malformed", f"the body is larger than {self.max_body_bytes} bytes", status=413)
        jws = parse_jws(request.body)
        header = jws.header
        has_jwk, has_kid = "jwk" in header, "kid" in header
        if has_jwk == has_kid:
            raise AcmeError("malformed", "the protected header must have exactly one of jwk and kid")
        if key_mode == JWK_ONLY and not has_jwk:
            raise AcmeError("malformed", f"{request.resource} must be signed with a jwk, not a kid")
        if key_mode == KID_ONLY and not has_kid:
            raise AcmeError("malformed", f"{request.resource} must be signed with the account's kid")
        url = header.get("url")
        if not isinstance(url, str):
            raise AcmeError("malformed", "the protected header has no url")
        if url != request.url:
            raise AcmeError("unauthorized", "the url header does not match the request URL")
        nonce = header.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise AcmeError("badNonce", "the protected header has no nonce")
        signed = _Signed(jws, urls, as_get, nonce[:64])
        if has_jwk:
            signed.jwk = parse_jwk(header["jwk"])
            verify_signature(jws, signed.jwk)
            return signed
        account = self._known_account(urls, header["kid"], request.resource)
        if account is not None:  # from an earlier request: the redemption checks it still holds
            jwk = _stored_jwk(account.jwk)
            if signature_verifies(jws, jwk):
                signed.jwk, signed.account = jwk, account
            else:  # perhaps a new key: the full path finds out
                self._accounts.pop(account.id, None)
        return signed

    def _authenticate(self, request: AcmeRequest, signed: _Signed, fresh: list[str]) -> _Caller:
        """The part of authentication that needs the database: the account and the nonce."""
        jws, urls = signed.jws, signed.urls
        if signed.account is not None:
            redeemed = self.store.redeem_nonce_as(signed.nonce, signed.account.id, signed.account.thumbprint)
            if redeemed is not None:
                fresh.append(redeemed)
                return self._caller(request, jws, signed.jwk, signed.account, urls, signed.as_get)  # type: ignore[arg-type]
            # A changed account or a bad nonce: the full path finds out which.
            self._accounts.pop(signed.account.id, None)
        account = None
        jwk = signed.jwk
        if "kid" in jws.header:
            account = self._account_for_kid(urls, jws.header["kid"])
            jwk = _stored_jwk(account.jwk)
            verify_signature(jws, jwk)
        assert jwk is not None  # a jwk request was verified by _check
        ok, new = self.store.redeem_nonce(signed.nonce, self.config.nonce_reject_percent, request.source,
                                          self.config.nonces_per_client)
        fresh.append(new)
        if not ok:
            raise AcmeError("badNonce", "the nonce is unknown, expired or already used")
        if account is not None:
            self._remember(account)
        return self._caller(request, jws, jwk, account, urls, signed.as_get)

    def _caller(self, request: AcmeRequest, jws: Jws, jwk: Jwk, account: AccountRow | None, urls: Urls,
                as_get: bool | None) -> _Caller:
        if as_get is True and jws.payload != b"":
            raise AcmeError("malformed", "this resource takes POST-as-GET (an empty payload)")
        if as_get is False and jws.payload == b"":
            raise AcmeError("malformed", "this resource needs a JSON payload")
        if jws.payload:
            jws.payload_json()  # fail early on a payload that is not an object
        return _Caller(jws, jwk, account, urls)

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
            raise AcmeError("accountDoesNotExist", "the kid is not an account URL of this directory")
        account = self.store.get_account(kid[len(prefix):])
        if account is None or account.provisioner != urls.provisioner:
            raise AcmeError("accountDoesNotExist", "no account with this kid")
        if account.status != "valid":
            raise AcmeError("unauthorized", f"the account is {account.status}")
        return account

    def _urls(self, base_url: str, provisioner: str) -> Urls:
        if provisioner not in self.provisioners:
            raise AcmeError.not_found("ACME provisioner")
        return Urls(base_url, provisioner)

    # -- accounts (section 7.3) -----------------------------------------------------------------

    def _new_account(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        payload = caller.payload()
        urls = caller.urls
        existing = self.store.find_account(request.provisioner, caller.jwk.thumbprint)
        if existing is not None:
            if existing.status != "valid":
                raise AcmeError("unauthorized", f"the account for this key is {existing.status}")
            return AcmeResponse(200, account_json(urls, existing), headers={"Location": urls.account(existing.id)})
        if payload.get("onlyReturnExisting") is True:
            raise AcmeError("accountDoesNotExist", "no account exists for this key")
        contact = _contacts(payload.get("contact", []))
        if "termsOfServiceAgreed" in payload and not isinstance(payload["termsOfServiceAgreed"], bool):
            raise AcmeError("malformed", "termsOfServiceAgreed must be a boolean")
        eab_kid = None
        keys = self.config.eab.get(request.provisioner) or {}
        if keys:
            if "externalAccountBinding" not in payload:
                raise AcmeError("externalAccountRequired", "this directory needs an external account binding")
            eab_kid = verify_eab(payload["externalAccountBinding"], caller.jwk, urls.resource("new-account"), keys)
        account, created = self.store.create_account(request.provisioner, caller.jwk.thumbprint,
                                                     caller.jwk.to_json(), contact, eab_kid)
        return AcmeResponse(201 if created else 200, account_json(urls, account),
                            headers={"Location": urls.account(account.id)})

    def _account(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        if request.params.get("id") != account.id:
            raise AcmeError("unauthorized", "this is not your account")
        if caller.jws.payload:
            payload = caller.payload()
            status = payload.get("status")
            if status is not None and status != "deactivated":
                raise AcmeError("malformed", "an account's status can only be changed to deactivated")
            contact = _contacts(payload["contact"]) if "contact" in payload else None
            account = self.store.update_account(account.id, contact=contact,
                                                status="deactivated" if status else None)
        return AcmeResponse(200, account_json(caller.urls, account),
                            headers={"Location": caller.urls.account(account.id)})

    def _key_change(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        inner = parse_jws(caller.payload())
        if "jwk" not in inner.header or "kid" in inner.header:
            raise AcmeError("malformed", "the inner JWS must carry the new key as jwk (and no kid)")
        if inner.header.get("url") != request.url:
            raise AcmeError("malformed", "the inner JWS url must equal the outer one")
        new_key = parse_jwk(inner.header["jwk"])
        verify_signature(inner, new_key)
        body = inner.payload_json()
        if body.get("account") != caller.urls.account(account.id):
            raise AcmeError("malformed", "the inner payload names another account")
        if parse_jwk(body.get("oldKey")).thumbprint != account.thumbprint:
            raise AcmeError("malformed", "oldKey is not the account's current key")
        if new_key.thumbprint == account.thumbprint:
            raise AcmeError("malformed", "the new key is the current key")
        if not self.store.change_key(account.id, account.thumbprint, new_key.thumbprint, new_key.to_json()):
            other = self.store.find_account(request.provisioner, new_key.thumbprint)
            error = AcmeError("malformed", "the new key already belongs to an account", status=409)
            if other is not None:
                error.headers["Location"] = caller.urls.account(other.id)
            raise error
        updated = self.store.get_account(account.id)
        assert updated is not None
        return AcmeResponse(200, account_json(caller.urls, updated),
                            headers={"Location": caller.urls.account(account.id)})

    def _orders(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        if request.params.get("id") != account.id:
            raise AcmeError("unauthorized", "this is not your account")
        now = self.clock()
        orders = [o for o in self.store.list_orders(account.id) if order_status(o, now) in ("pending", "ready",
                                                                                               "processing", "valid")]
        return AcmeResponse(200, {"orders": [caller.urls.order(o.id) for o in orders]})

    # -- orders (section 7.4) -------------------------------------------------------------------

    def _new_order(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        payload = caller.payload()
        if "notBefore" in payload or "notAfter" in payload:
            raise AcmeError("malformed", "notBefore/notAfter are not supported: the provisioner sets the lifetime")
        identifiers = payload.get("identifiers")
        if not isinstance(identifiers, list) or not identifiers or len(identifiers) > MAX_IDENTIFIERS:
            raise AcmeError("malformed", f"identifiers must be a list of 1 to {MAX_IDENTIFIERS} objects")
        parsed: list[tuple[str, str]] = []
        problems = []
        for ident in identifiers:
            try:
                parsed.append(_identifier(ident))
            except AcmeError as exc:
                problems.append(subproblem(exc.kind, exc.detail, ident if isinstance(ident, dict) else None))
        if problems:
            raise AcmeError(problems[0]["type"].rsplit(":", 1)[1] if len(problems) == 1 else "compound",
                            "; ".join(p["detail"] for p in problems)[:500], subproblems=problems)
        parsed = list(dict.fromkeys(parsed))
        policy = self.authority.provisioners[request.provisioner].policy
        for kind, value in parsed:
            try:
                policy.check_names([parse_name(value)])
            except PolicyDenied as exc:
                problems.append(subproblem("rejectedIdentifier", exc.detail, {"type": kind, "value": value}))
        if problems:
            raise AcmeError("rejectedIdentifier", "; ".join(p["detail"] for p in problems)[:500], subproblems=problems)
        replaces = payload.get("replaces")
        if replaces is not None:
            self._check_replaces(account, replaces)
        authzs = []
        for kind, value in parsed:
            wildcard = value.startswith("*.")
            base = value[2:] if wildcard else value
            authzs.append(NewAuthz(kind, base, wildcard, challenge_types(kind, wildcard)))
        order, rows = self.store.create_order(account.id, request.provisioner, parsed, authzs, ORDER_LIFETIME,
                                              replaces)
        return self._order_response(caller.urls, order, 201, rows)

    def _check_replaces(self, account: AccountRow, replaces: Any) -> None:
        if not isinstance(replaces, str):
            raise AcmeError("malformed", "replaces must be an ARI certificate id")
        cid = ari.parse_cert_id(replaces)
        order = self.store.order_for_certificate(cid.serial_hex)
        if order is None or order.account_id != account.id:
            raise AcmeError("malformed", "replaces names no certificate of this account")

    def _order(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        order, authzs = self._owned_order(caller, request.params["id"])
        return self._order_response(caller.urls, order, 200, authzs)

    def _owned_order(self, caller: _Caller, order_id: str) -> tuple[OrderRow, list[AuthzRow]]:
        """The caller's order in this directory and its authorizations, else the problem."""
        account = _own(caller)
        found = self.store.get_order_with_authzs(order_id)
        if found is None or found[0].provisioner != caller.urls.provisioner:
            raise AcmeError.not_found("order")
        if found[0].account_id != account.id:
            raise AcmeError("unauthorized", "the order belongs to another account")
        return found

    def _order_response(self, urls: Urls, order: OrderRow, status: int, authzs: list[AuthzRow]) -> AcmeResponse:
        headers = {"Location": urls.order(order.id)}
        if order.status == "processing":
            headers["Retry-After"] = "1"
        return AcmeResponse(status, order_json(urls, order, authzs, self.clock()), headers=headers)

    def _finalize(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        order, authzs = self._owned_order(caller, request.params["id"])
        status = order_status(order, self.clock())
        if status != "ready":
            raise AcmeError("orderNotReady", f"the order is {status}, not ready")
        csr_b64 = caller.payload().get("csr")
        try:
            csr = parse_csr(b64d(csr_b64, "csr"))
        except CSRError as exc:
            raise AcmeError("badCSR", str(exc)) from None
        if csr.asks_for_ca:
            raise AcmeError("badCSR", "the CSR asks for a CA certificate (basicConstraints CA:TRUE)")
        wanted = {parse_name(v) for _t, v in order.identifiers}
        asked = set(csr.names)
        if asked != wanted:
            missing = sorted(name_text(n) for n in wanted - asked)
            extra = sorted(name_text(n) for n in asked - wanted)
            raise AcmeError("badCSR", "the CSR must name exactly the order's identifiers"
                            + (f"; missing: {', '.join(missing)}" if missing else "")
                            + (f"; not in the order: {', '.join(extra)[:300]}" if extra else ""))
        if not self.store.begin_finalize(order.id):
            raise AcmeError("orderNotReady", "the order is already being finalized")
        names = [name_text(n) for n in _sorted_names(wanted)]
        try:
            issued = self.authority.issue_for_order(order.provisioner, csr, names,
                                                    actor=f"acme:{order.account_id}")
        except TrustyardError as exc:
            error = _from_trustyard(exc)
            self.store.end_finalize(order.id, None, error.problem())
            raise error from None
        except Exception:
            self.store.end_finalize(order.id, None, AcmeError("serverInternal", "issuance failed").problem())
            raise
        self.store.end_finalize(order.id, issued.record.serial, None)
        return self._order_response(caller.urls, replace(order, status="valid", cert_serial=issued.record.serial),
                                    200, authzs)

    # -- authorizations and challenges (sections 7.5, 7.5.1, 7.5.2) ------------------------------

    def _authz(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        found = self.store.get_authz(request.params["id"])
        if found is None:
            raise AcmeError.not_found("authorization")
        authz, challenges = found
        if authz.account_id != account.id:
            raise AcmeError("unauthorized", "the authorization belongs to another account")
        if caller.jws.payload:
            payload = caller.payload()
            if payload.get("status") != "deactivated" or len(payload) != 1:
                raise AcmeError("malformed", "an authorization can only be deactivated ({\"status\": \"deactivated\"})")
            if authz_status(authz, self.clock()) not in ("pending", "valid") or not self.store.deactivate_authz(authz.id):
                raise AcmeError("malformed", f"the authorization is {authz.status}: it cannot be deactivated",
                                status=403)
            authz, challenges = self.store.get_authz(authz.id)  # type: ignore[misc]
        if authz.status == "pending":
            self._resume_stalled(authz, challenges, caller.jwk)
        headers = {"Retry-After": "1"} if authz.status == "pending" else {}
        return AcmeResponse(200, authz_json(caller.urls, authz, challenges, self.clock()), headers=headers)

    def _resume_stalled(self, authz: AuthzRow, challenges: list[ChallengeRow], jwk: Jwk) -> None:
        """A challenge left ``processing`` by a worker that died is validated again when polled."""
        cutoff = self.clock() - timedelta(seconds=3 * self.config.validation_timeout)
        for challenge in challenges:
            if challenge.status == "processing" and challenge.started_at and challenge.started_at < cutoff \
                    and self.store.restart_challenge(challenge.id, cutoff):
                self.va.submit(_probe(challenge, authz, jwk))

    def _chall(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        found = self.store.get_challenge(request.params["id"])
        if found is None:
            raise AcmeError.not_found("challenge")
        challenge, authz = found
        if authz.account_id != account.id:
            raise AcmeError("unauthorized", "the challenge belongs to another account")
        if caller.jws.payload:
            if caller.payload():
                raise AcmeError("malformed", "respond to a challenge with an empty object {}")
            if challenge.status == "pending":
                if authz_status(authz, self.clock()) == "pending":
                    self._admit(account, authz)  # over a limit: refused, and the challenge stays pending
                started = self.store.start_challenge(challenge.id)
                if started is None and authz_status(authz, self.clock()) != "pending":
                    raise AcmeError("malformed", f"the authorization is {authz_status(authz, self.clock())}",
                                    status=403)
                if started is not None and self.va.submit(_probe(challenge, authz, caller.jwk)):
                    challenge = replace(challenge, status="processing", started_at=started)
                else:  # another request started it, or the queue is full: read what happened
                    if started is not None:
                        self.store.finish_challenge(challenge.id, subproblem(
                            "serverInternal", "the validation queue is full; try a new order later"))
                    found = self.store.get_challenge(challenge.id)
                    assert found is not None
                    challenge = found[0]
        headers = {"Link": f'<{caller.urls.authz(authz.id)}>;rel="up"'}
        if challenge.status == "processing":
            headers["Retry-After"] = "1"
        return AcmeResponse(200, challenge_json(caller.urls, challenge), headers=headers)

    def _admit(self, account: AccountRow, authz: AuthzRow) -> None:
        try:
            self.va.admit(account.id, authz.order_id)
        except ValidationLimited as exc:
            error = AcmeError("rateLimited", exc.detail)
            error.headers["Retry-After"] = str(exc.retry_after)
            raise error from None

    def record_validation(self, challenge_id: str, error: dict[str, Any] | None) -> None:
        self.store.finish_challenge(challenge_id, error)

    # -- certificates (sections 7.4.2, 7.6) -------------------------------------------------------

    def _cert(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        account = _own(caller)
        serial = request.params["serial"].lower()
        order = self.store.order_for_certificate(serial)
        if order is None or order.provisioner != caller.urls.provisioner:
            raise AcmeError.not_found("certificate")
        if order.account_id != account.id:
            raise AcmeError("unauthorized", "the certificate belongs to another account")
        record = self.authority.get(serial)
        if record is None or not record.der:
            raise AcmeError.not_found("certificate")
        if request.accept and PEM_CHAIN not in request.accept and "*/*" not in request.accept \
                and "application/*" not in request.accept:
            raise AcmeError("malformed", f"the certificate is available as {PEM_CHAIN} only", status=406)
        # The stored DER was signed here; PEM is its base64, so no parsing is needed to send it.
        return AcmeResponse(200, ssl.DER_cert_to_PEM_cert(record.der) + self.authority.chain_pem,
                            content_type=PEM_CHAIN)

    def _revoke_cert(self, request: AcmeRequest, caller: _Caller) -> AcmeResponse:
        payload = caller.payload()
        der = b64d(payload.get("certificate"), "certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
            serial = serial_hex(cert.serial_number)
            cert_jwk = jwk_of(cert.public_key())  # type: ignore[arg-type]
        except Exception:
            raise AcmeError("malformed", "certificate is not a DER X.509 certificate") from None
        record = self.authority.get(serial)
        if record is None or record.der != der:
            raise AcmeError("malformed", "this CA did not issue that certificate", status=404)
        reason_code = payload.get("reason", 0)
        if type(reason_code) is not int or reason_code not in REASON_CODES:
            raise AcmeError("badRevocationReason", f"reason must be one of {sorted(REASON_CODES)}")
        if caller.account is None:
            if cert_jwk.thumbprint != caller.jwk.thumbprint:
                raise AcmeError("unauthorized", "the request is not signed by the certificate's key")
            actor = f"acme:certkey:{serial}"
        else:
            actor = f"acme:{caller.account.id}"
            order = self.store.order_for_certificate(serial)
            if order is None or order.account_id != caller.account.id:
                wanted = {v for v in record.sans}
                held = self.store.valid_identifiers(caller.account.id, [v.removeprefix("*.") for v in wanted])
                if not wanted or any(v.removeprefix("*.") not in held for v in wanted):
                    raise AcmeError("unauthorized", "the account neither ordered this certificate nor holds "
                                                    "authorizations for all its names")
        try:
            self.authority.revoke(serial, REASON_CODES[reason_code], admin=True, actor=actor)
        except Conflict as exc:
            if exc.code == "alreadyRevoked":
                raise AcmeError("alreadyRevoked", f"certificate {serial} is already revoked") from None
            raise
        return AcmeResponse(200, None)


# -- helpers -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _stored_jwk(text: str) -> Jwk:
    """An account's stored key, parsed once per worker (a pure function of the stored JSON)."""
    return parse_jwk(json.loads(text))


def _probe(challenge: ChallengeRow, authz: AuthzRow, jwk: Jwk) -> Probe:
    return Probe(challenge.id, challenge.type, authz.type, authz.value,
                 key_authorization(challenge.token, jwk.thumbprint), authz.id, authz.account_id, authz.order_id)


def _own(caller: _Caller) -> AccountRow:
    assert caller.account is not None  # KID_ONLY resources always have one
    return caller.account


def _identifier(ident: Any) -> tuple[str, str]:
    if not isinstance(ident, dict) or set(ident) - {"type", "value"} or not isinstance(ident.get("value"), str):
        raise AcmeError("malformed", "an identifier is {\"type\": ..., \"value\": ...}")
    kind, value = ident.get("type"), ident["value"]
    if kind == "dns":
        if ":" in value or "/" in value:
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is not a DNS name")
        try:
            name = normalize_dns(value)
        except ValueError as exc:
            raise AcmeError("rejectedIdentifier", str(exc)[:200]) from None
        if reads_as_ip(name):  # else proved by dns-01 and issued as an IP SAN
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is an IP address: order it as an ip identifier")
        return "dns", name
    if kind == "ip":
        try:
            return "ip", str(ipaddress.ip_address(value))
        except ValueError:
            raise AcmeError("rejectedIdentifier", f"{value[:100]!r} is not an IP address") from None
    raise AcmeError("unsupportedIdentifier", f"identifier type {str(kind)[:20]!r} is not supported (dns, ip)")


def _contacts(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value) or len(value) > 10:
        raise AcmeError("malformed", "contact must be a list of up to 10 URLs")
    for contact in value:
        if not contact.startswith("mailto:"):
            raise AcmeError("unsupportedContact", "only mailto: contacts are supported")
        address = contact[len("mailto:"):]
        if "@" not in address or "," in address or "?" in address or len(contact) > 255 or not contact.isascii():
            raise AcmeError("invalidContact", "a contact is mailto:one-address@domain")
    return value


def _sorted_names(names: set[Name]) -> list[Name]:
    return sorted(names, key=lambda n: (not isinstance(n, x509.DNSName), name_text(n)))


def _from_authority(exc: AcmeError) -> bool:
    """The ACME form of the authority's refusal (finalize, revoke), which the authority audited."""
    return isinstance(exc.__context__, TrustyardError) and not isinstance(exc.__context__, AcmeError)


def _from_trustyard(exc: TrustyardError) -> AcmeError:
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, PolicyDenied):
        kind = "rejectedIdentifier" if exc.rule in ("names_allowed", "has_names", "dns_names_are_not_ips") else "badCSR"
        return AcmeError(kind, exc.detail)
    if isinstance(exc, NotFound):
        return AcmeError("malformed", exc.detail, status=404)
    if exc.status >= 500:
        return AcmeError.internal()
    return AcmeError("badCSR" if exc.code in ("badCSR", "badSignature", "badName") else "malformed", exc.detail)


def _problem(exc: AcmeError) -> AcmeResponse:
    return AcmeResponse(exc.status, exc.problem(), content_type="application/problem+json", headers=dict(exc.headers))


def _rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
