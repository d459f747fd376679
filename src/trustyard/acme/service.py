"""The ACME protocol steps (RFC 8555 section 7), one method per resource, framework-free.

    AcmeRequest --Envelope (content type, size, JWS, url, key, signature, nonce: .envelope)-->
    handler (accounts, orders, authorizations, challenges, finalize, certificates, revocation),
    found in ``AcmeService.handlers`` --> AcmeResponse (every POST response carries a fresh
    Replay-Nonce, errors included)

Issuance goes through ``Authority.issue_for_order``: the provisioner's policy, the ledger and
the audit log are the REST API's.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ..ca.authority import Authority
from ..ca.config import AcmeConfig
from ..errors import Code, Conflict, PolicyDenied, TrustyardError
from ..store import AuditEvent, refusals
from ..x509.names import parse_name
from ..x509.summary import serial_text
from . import ari
from .challenges import challenge_types, key_authorization
from .envelope import REPLAY_NONCE, RESOURCES, AcmeFailure, AcmeRequest, AcmeResponse, Caller, Envelope, Signed
from .jws import Jwk, b64d, jwk_of, parse_jwk, parse_jws, verify_eab, verify_signature
from .model import (
    AccountRow,
    AuthzRow,
    ChallengeRow,
    NewAuthz,
    OrderRow,
    Urls,
    account_json,
    authz_json,
    authz_status,
    challenge_json,
    order_json,
    order_status,
    rfc3339,
)
from .payloads import REASON_CODES, contacts, csr_for_order, identifier
from .probes import Probe
from .problems import AcmeCode, AcmeError, from_authority, from_trustyard, subproblem
from .validation import ValidationAuthority, ValidationLimited

if TYPE_CHECKING:  # the store imports this package's rows: only its type is needed here
    from ..store.acme_store import AcmeStore

log = logging.getLogger("trustyard.acme")

PEM_CHAIN = "application/pem-certificate-chain"
ORDER_LIFETIME = timedelta(hours=1)
MAX_IDENTIFIERS = 100


class AcmeService:
    """The protocol steps: the unauthenticated resources, and ``post`` for every POST, which
    opens the envelope (:mod:`.envelope`) and hands the caller to the resource's handler."""

    def __init__(self, authority: Authority, store: AcmeStore, config: AcmeConfig, provisioners: set[str],
                 validation: ValidationAuthority, max_body_bytes: int = 64 * 1024,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.authority = authority
        self.store = store
        self.config = config
        self.provisioners = provisioners
        self.va = validation
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.envelope = Envelope(store, config, provisioners, max_body_bytes)
        # resource -> its handler (the envelope's RESOURCES says how each is signed)
        self.handlers: dict[str, Callable[[AcmeRequest, Caller], AcmeResponse]] = {
            "new-account": self.new_account, "account": self.account, "key-change": self.key_change,
            "orders": self.orders, "new-order": self.new_order, "order": self.order, "finalize": self.finalize,
            "authz": self.authz, "chall": self.chall, "cert": self.cert, "revoke-cert": self.revoke_cert,
        }
        assert self.handlers.keys() == RESOURCES.keys()

    # -- unauthenticated resources ------------------------------------------------------------

    def directory(self, base_url: str, provisioner: str) -> AcmeResponse:
        urls = self.envelope.urls(base_url, provisioner)
        return AcmeResponse(200, {
            "newNonce": urls.resource("new-nonce"), "newAccount": urls.resource("new-account"),
            "newOrder": urls.resource("new-order"), "revokeCert": urls.resource("revoke-cert"),
            "keyChange": urls.resource("key-change"), "renewalInfo": urls.resource("renewal-info"),
            "meta": {"externalAccountRequired": bool(self.config.eab.get(provisioner)),
                     "website": "https://github.com/trustyard"},
        })

    def new_nonce(self, base_url: str, provisioner: str, method: str, source: str = "") -> AcmeResponse:
        urls = self.envelope.urls(base_url, provisioner)
        nonce = self.store.mint_nonce(retry=True, source=source, keep=self.config.nonces_per_client)
        return AcmeResponse(200 if method == "HEAD" else 204, None,
                            headers={"Replay-Nonce": nonce, "Cache-Control": "no-store",
                                     "Link": f'<{urls.directory()}>;rel="index"'})

    def renewal_info(self, base_url: str, provisioner: str, cert_id_text: str) -> AcmeResponse:
        self.envelope.urls(base_url, provisioner)
        cid = ari.parse_cert_id(cert_id_text)
        ski = self.authority.signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        record = self.authority.get(cid.serial_text)
        if cid.key_identifier != ski.value.key_identifier or record is None or record.status == "pending":
            raise AcmeError.not_found("certificate")
        urgent = record.status == "revoked" or self.authority.must_renew(record.serial)  # ca.emergency: due now
        window = ari.suggested_window(record.not_before, record.not_after, urgent, self.clock())
        return AcmeResponse(200, {"suggestedWindow": {"start": rfc3339(window.start), "end": rfc3339(window.end)}},
                            headers={"Retry-After": str(int(window.retry_after.total_seconds()))})

    # -- POST ---------------------------------------------------------------------------------

    def post(self, request: AcmeRequest) -> AcmeResponse:
        """Any POST: authenticate, dispatch, and always hand back a fresh nonce.

        What needs no database happens first (``Envelope.check``: the request's shape and, when
        the key is at hand, its signature); the rest runs in one database transaction
        (``AcmeStore.unit``), which on SQLite holds the write lock, so the lock is not held
        while a signature is verified. A failure not the client's raises ``AcmeFailure`` (chained
        to it) after the transaction, with the answer and its fresh nonce, for the web layer."""
        failure: Exception | None = None
        try:
            signed: Signed | AcmeError = self.envelope.check(request)
        except AcmeError as exc:
            signed = exc
        except Exception as exc:  # a bug, not the client: still a problem document with a nonce
            failure, signed = exc, AcmeError.internal()
        try:
            with self.store.unit():
                response, failed = self._post(request, signed)
        except Exception as exc:  # the transaction itself failed (begin or commit): nothing was promised
            raise AcmeFailure(_problem(AcmeError.internal())) from exc
        failure = failure or failed
        if failure is not None:
            raise AcmeFailure(response) from failure
        return response

    def _post(self, request: AcmeRequest, signed: Signed | AcmeError) -> tuple[AcmeResponse, Exception | None]:
        nonce = ""  # the fresh nonce the spent one bought, once the envelope is open
        caller = failure = None
        try:
            if isinstance(signed, AcmeError):
                raise signed
            caller, nonce = self.envelope.open(request, signed)
            response = self.handlers[request.resource](request, caller)
        except AcmeError as exc:
            response = _problem(exc)  # a refusal from Envelope.open names its fresh nonce already
            if caller is None:  # never authenticated: counted, not audited one by one
                self._refused(request, exc.kind, exc.detail)
            elif not from_authority(exc):  # an account's request the protocol refuses: logged, not audited
                self.store.sql.tell(AuditEvent(
                    actor=f"acme:{caller.account.id}" if caller.account else f"acme:jwk:{caller.jwk.thumbprint[:16]}",
                    action="request.deny",
                    target=f"acme.{request.resource}", outcome="refused",
                    detail={"code": exc.kind, "reason": exc.detail[:500]}))
        except TrustyardError as exc:  # from the authority: map to the closest ACME type
            response = _problem(from_trustyard(exc))
        except Exception as exc:  # a bug: answered after the transaction (see post)
            failure, response = exc, _problem(AcmeError.internal())
        if not nonce and REPLAY_NONCE not in response.headers:  # no nonce spent: mint one
            try:
                nonce = self.store.mint_nonce(retry=True, source=request.source, keep=self.config.nonces_per_client)
            except Exception:  # the database is down: the problem document still goes out
                log.exception("cannot mint a nonce")
                return response, failure
        if nonce:
            response.headers[REPLAY_NONCE] = nonce
        if request.provisioner in self.provisioners:
            response.headers.setdefault("Link", f'<{Urls(request.base_url, request.provisioner).directory()}>'
                                                ';rel="index"')
        response.headers["Cache-Control"] = "no-store"
        return response, failure

    def _refused(self, request: AcmeRequest, kind: str, message: str = "") -> None:
        try:
            refusals.note(self.store.sql, request.source or "unknown", f"acme.{request.resource}:{kind}",
                          message=message[:500])
        except Exception:  # the count is not worth failing the answer for
            log.exception("cannot count a refusal")

    # -- accounts (section 7.3) -----------------------------------------------------------------

    def new_account(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        payload = caller.payload()
        urls = caller.urls
        existing = self.store.find_account(request.provisioner, caller.jwk.thumbprint)
        if existing is not None:
            if existing.status != "valid":
                raise AcmeError(AcmeCode.UNAUTHORIZED, f"the account for this key is {existing.status}")
            return AcmeResponse(200, account_json(urls, existing), headers={"Location": urls.account(existing.id)})
        if payload.get("onlyReturnExisting") is True:
            raise AcmeError(AcmeCode.ACCOUNT_DOES_NOT_EXIST, "no account exists for this key")
        contact = contacts(payload.get("contact", []))
        if "termsOfServiceAgreed" in payload and not isinstance(payload["termsOfServiceAgreed"], bool):
            raise AcmeError(AcmeCode.MALFORMED, "termsOfServiceAgreed must be a boolean")
        eab_kid = None
        keys = self.config.eab.get(request.provisioner) or {}
        if keys:
            if "externalAccountBinding" not in payload:
                raise AcmeError(AcmeCode.EXTERNAL_ACCOUNT_REQUIRED, "this directory needs an external account binding")
            eab_kid = verify_eab(payload["externalAccountBinding"], caller.jwk, urls.resource("new-account"), keys)
        account, created = self.store.create_account(request.provisioner, caller.jwk.thumbprint,
                                                     caller.jwk.to_json(), contact, eab_kid)
        return AcmeResponse(201 if created else 200, account_json(urls, account),
                            headers={"Location": urls.account(account.id)})

    def account(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        if request.params.get("id") != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "this is not your account")
        if caller.jws.payload:
            payload = caller.payload()
            status = payload.get("status")
            if status is not None and status != "deactivated":
                raise AcmeError(AcmeCode.MALFORMED, "an account's status can only be changed to deactivated")
            contact = contacts(payload["contact"]) if "contact" in payload else None
            account = self.store.update_account(account.id, contact=contact,
                                                status="deactivated" if status else None)
        return AcmeResponse(200, account_json(caller.urls, account),
                            headers={"Location": caller.urls.account(account.id)})

    def key_change(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        inner = parse_jws(caller.payload())
        if "jwk" not in inner.header or "kid" in inner.header:
            raise AcmeError(AcmeCode.MALFORMED, "the inner JWS must carry the new key as jwk (and no kid)")
        if inner.header.get("url") != request.url:
            raise AcmeError(AcmeCode.MALFORMED, "the inner JWS url must equal the outer one")
        new_key = parse_jwk(inner.header["jwk"])
        verify_signature(inner, new_key)
        body = inner.payload_json()
        if body.get("account") != caller.urls.account(account.id):
            raise AcmeError(AcmeCode.MALFORMED, "the inner payload names another account")
        if parse_jwk(body.get("oldKey")).thumbprint != account.thumbprint:
            raise AcmeError(AcmeCode.MALFORMED, "oldKey is not the account's current key")
        if new_key.thumbprint == account.thumbprint:
            raise AcmeError(AcmeCode.MALFORMED, "the new key is the current key")
        if not self.store.change_key(account.id, account.thumbprint, new_key.thumbprint, new_key.to_json()):
            other = self.store.find_account(request.provisioner, new_key.thumbprint)
            error = AcmeError(AcmeCode.MALFORMED, "the new key already belongs to an account", status=409)
            if other is not None:
                error.headers["Location"] = caller.urls.account(other.id)
            raise error
        updated = self.store.get_account(account.id)
        assert updated is not None
        return AcmeResponse(200, account_json(caller.urls, updated),
                            headers={"Location": caller.urls.account(account.id)})

    def orders(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        if request.params.get("id") != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "this is not your account")
        now = self.clock()
        orders = [o for o in self.store.list_orders(account.id) if order_status(o, now) in ("pending", "ready",
                                                                                               "processing", "valid")]
        return AcmeResponse(200, {"orders": [caller.urls.order(o.id) for o in orders]})

    # -- orders (section 7.4) -------------------------------------------------------------------

    def new_order(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        payload = caller.payload()
        if "notBefore" in payload or "notAfter" in payload:
            raise AcmeError(AcmeCode.MALFORMED, "notBefore/notAfter are not supported: the provisioner sets the lifetime")
        identifiers = payload.get("identifiers")
        if not isinstance(identifiers, list) or not identifiers or len(identifiers) > MAX_IDENTIFIERS:
            raise AcmeError(AcmeCode.MALFORMED, f"identifiers must be a list of 1 to {MAX_IDENTIFIERS} objects")
        parsed: list[tuple[str, str]] = []
        problems = []
        for ident in identifiers:
            try:
                parsed.append(identifier(ident))
            except AcmeError as exc:
                problems.append(subproblem(exc.kind, exc.detail, ident if isinstance(ident, dict) else None))
        if problems:
            raise AcmeError(problems[0]["type"].rsplit(":", 1)[1] if len(problems) == 1 else AcmeCode.COMPOUND,
                            "; ".join(p["detail"] for p in problems)[:500], subproblems=problems)
        parsed = list(dict.fromkeys(parsed))
        policy = self.authority.provisioners[request.provisioner].policy
        for kind, value in parsed:
            try:
                policy.check_names([parse_name(value)])
            except PolicyDenied as exc:
                problems.append(subproblem(AcmeCode.REJECTED_IDENTIFIER, exc.detail, {"type": kind, "value": value}))
        if problems:
            raise AcmeError(AcmeCode.REJECTED_IDENTIFIER, "; ".join(p["detail"] for p in problems)[:500], subproblems=problems)
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
            raise AcmeError(AcmeCode.MALFORMED, "replaces must be an ARI certificate id")
        cid = ari.parse_cert_id(replaces)
        order = self.store.order_for_certificate(cid.serial_text)
        if order is None or order.account_id != account.id:
            raise AcmeError(AcmeCode.MALFORMED, "replaces names no certificate of this account")

    def order(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        order, authzs = self._owned_order(caller, request.params["id"])
        return self._order_response(caller.urls, order, 200, authzs)

    def _owned_order(self, caller: Caller, order_id: str) -> tuple[OrderRow, list[AuthzRow]]:
        """The caller's order in this directory and its authorizations, else the problem."""
        account = _own(caller)
        found = self.store.get_order_with_authzs(order_id)
        if found is None or found[0].provisioner != caller.urls.provisioner:
            raise AcmeError.not_found("order")
        if found[0].account_id != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "the order belongs to another account")
        return found

    def _order_response(self, urls: Urls, order: OrderRow, status: int, authzs: list[AuthzRow]) -> AcmeResponse:
        headers = {"Location": urls.order(order.id)}
        if order.status == "processing":
            headers["Retry-After"] = "1"
        return AcmeResponse(status, order_json(urls, order, authzs, self.clock()), headers=headers)

    def finalize(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        order, authzs = self._owned_order(caller, request.params["id"])
        status = order_status(order, self.clock())
        if status != "ready":
            raise AcmeError(AcmeCode.ORDER_NOT_READY, f"the order is {status}, not ready")
        csr, names = csr_for_order(caller.payload().get("csr"), order.identifiers)
        if not self.store.begin_finalize(order.id):
            raise AcmeError(AcmeCode.ORDER_NOT_READY, "the order is already being finalized")
        try:
            issued = self.authority.issue_for_order(order.provisioner, csr, names,
                                                    actor=f"acme:{order.account_id}")
        except TrustyardError as exc:
            error = from_trustyard(exc)
            self.store.end_finalize(order.id, None, error.problem())
            raise error from None
        except Exception:
            self.store.end_finalize(order.id, None, AcmeError(AcmeCode.SERVER_INTERNAL, "issuance failed").problem())
            raise
        self.store.end_finalize(order.id, issued.record.serial, None)
        return self._order_response(caller.urls, replace(order, status="valid", cert_serial=issued.record.serial),
                                    200, authzs)

    # -- authorizations and challenges (sections 7.5, 7.5.1, 7.5.2) ------------------------------

    def authz(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        found = self.store.get_authz(request.params["id"])
        if found is None:
            raise AcmeError.not_found("authorization")
        authz, challenges = found
        if authz.account_id != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "the authorization belongs to another account")
        if caller.jws.payload:
            payload = caller.payload()
            if payload.get("status") != "deactivated" or len(payload) != 1:
                raise AcmeError(AcmeCode.MALFORMED, "an authorization can only be deactivated ({\"status\": \"deactivated\"})")
            if (authz_status(authz, self.clock()) not in ("pending", "valid")
                    or not self.store.deactivate_authz(authz.id)):
                raise AcmeError(AcmeCode.MALFORMED, f"the authorization is {authz.status}: it cannot be deactivated",
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

    def chall(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        found = self.store.get_challenge(request.params["id"])
        if found is None:
            raise AcmeError.not_found("challenge")
        challenge, authz = found
        if authz.account_id != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "the challenge belongs to another account")
        if caller.jws.payload:
            if caller.payload():
                raise AcmeError(AcmeCode.MALFORMED, "respond to a challenge with an empty object {}")
            if challenge.status == "pending":
                if authz_status(authz, self.clock()) == "pending":
                    self._admit(account, authz)  # over a limit: refused, and the challenge stays pending
                started = self.store.start_challenge(challenge.id)
                if started is None and authz_status(authz, self.clock()) != "pending":
                    raise AcmeError(AcmeCode.MALFORMED, f"the authorization is {authz_status(authz, self.clock())}",
                                    status=403)
                if started is not None and self.va.submit(_probe(challenge, authz, caller.jwk)):
                    challenge = replace(challenge, status="processing", started_at=started)
                else:  # another request started it, or the queue is full: read what happened
                    if started is not None:
                        self.store.finish_challenge(challenge.id, subproblem(
                            AcmeCode.SERVER_INTERNAL, "the validation queue is full; try a new order later"))
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
            error = AcmeError(AcmeCode.RATE_LIMITED, exc.detail)
            error.headers["Retry-After"] = str(exc.retry_after)
            raise error from None

    # -- certificates (sections 7.4.2, 7.6) -------------------------------------------------------

    def cert(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        account = _own(caller)
        try:
            serial = serial_text(request.params["serial"])
        except ValueError:
            raise AcmeError.not_found("certificate") from None
        order = self.store.order_for_certificate(serial)
        if order is None or order.provisioner != caller.urls.provisioner:
            raise AcmeError.not_found("certificate")
        if order.account_id != account.id:
            raise AcmeError(AcmeCode.UNAUTHORIZED, "the certificate belongs to another account")
        record = self.authority.get(serial)
        if record is None or not record.der:
            raise AcmeError.not_found("certificate")
        if request.accept and PEM_CHAIN not in request.accept and "*/*" not in request.accept \
                and "application/*" not in request.accept:
            raise AcmeError(AcmeCode.MALFORMED, f"the certificate is available as {PEM_CHAIN} only", status=406)
        # PEM is the stored DER's base64; the chain is the signing CA's (a rotation may have replaced it).
        chain_pem = self.authority.material.chain_pem_for(record.der)
        return AcmeResponse(200, ssl.DER_cert_to_PEM_cert(record.der) + chain_pem,
                            content_type=PEM_CHAIN)

    def revoke_cert(self, request: AcmeRequest, caller: Caller) -> AcmeResponse:
        payload = caller.payload()
        der = b64d(payload.get("certificate"), "certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
            serial = serial_text(cert.serial_number)
            cert_jwk = jwk_of(cert.public_key())  # type: ignore[arg-type]
        except Exception:
            raise AcmeError(AcmeCode.MALFORMED, "certificate is not a DER X.509 certificate") from None
        record = self.authority.get(serial)
        if record is None or record.der != der:
            raise AcmeError(AcmeCode.MALFORMED, "this CA did not issue that certificate", status=404)
        reason_code = payload.get("reason", 0)
        if type(reason_code) is not int or reason_code not in REASON_CODES:
            raise AcmeError(AcmeCode.BAD_REVOCATION_REASON, f"reason must be one of {sorted(REASON_CODES)}")
        if caller.account is None:
            if cert_jwk.thumbprint != caller.jwk.thumbprint:
                raise AcmeError(AcmeCode.UNAUTHORIZED, "the request is not signed by the certificate's key")
            actor = f"acme:certkey:{serial}"
        else:
            actor = f"acme:{caller.account.id}"
            order = self.store.order_for_certificate(serial)
            if order is None or order.account_id != caller.account.id:
                wanted = {v for v in record.sans}
                held = self.store.valid_identifiers(caller.account.id, [v.removeprefix("*.") for v in wanted])
                if not wanted or any(v.removeprefix("*.") not in held for v in wanted):
                    raise AcmeError(AcmeCode.UNAUTHORIZED, "the account neither ordered this certificate nor holds "
                                                    "authorizations for all its names")
        try:
            self.authority.revoke(serial, REASON_CODES[reason_code], admin=True, actor=actor)
        except Conflict as exc:
            if exc.code == Code.ALREADY_REVOKED:
                raise AcmeError(AcmeCode.ALREADY_REVOKED, f"certificate {serial} is already revoked") from None
            raise
        return AcmeResponse(200, None)


def _probe(challenge: ChallengeRow, authz: AuthzRow, jwk: Jwk) -> Probe:
    return Probe(challenge.id, challenge.type, authz.type, authz.value,
                 key_authorization(challenge.token, jwk.thumbprint), authz.id, authz.account_id, authz.order_id)


def _own(caller: Caller) -> AccountRow:
    assert caller.account is not None  # KID_ONLY resources always have one
    return caller.account


def _problem(exc: AcmeError) -> AcmeResponse:
    return AcmeResponse(exc.status, exc.problem(), content_type="application/problem+json", headers=dict(exc.headers))

