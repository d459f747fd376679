"""The authority: sign, renew and revoke, each a readable pipeline.

    authenticate -> policy rules -> record intent (serial reserved, token redeemed)
    -> sign -> store (before returning) -> return

Every refusal is audited with the rule and value that caused it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import BadRequest, Code, Forbidden, TrustyardError, Unauthorized
from ..policy import IssuanceRequest, Policy
from ..store.records import (
    AuditEvent,
    CertRecord,
    Intent,
    SerialCollision,
    TokenRedeemed,
)
from ..units import format_duration, format_time, parse_duration
from ..x509.csr import CSRError, ParsedCSR, parse_csr
from ..x509.keys import PrivateKey, PublicKey
from ..x509.names import Name, name_text, parse_name
from ..x509.profiles import LeafSpec, leaf_builder, new_serial
from ..x509.revocation import REVOCATION_REASONS
from ..x509.summary import fingerprint_sha256, pem_bundle, serial_text
from . import proofs, retries, tokens
from .crl import CrlScheme
from .ledger import Guard, Ledger
from .retries import PENDING_INTENT_BOUND
from .retries import RENEWAL_RETRY_WINDOW as RENEWAL_RETRY_WINDOW  # where it was named before
from .signer import Signer


@dataclass(frozen=True)
class Provisioner:
    name: str
    policy: Policy
    public_key: PublicKey | None = None
    private_key: PrivateKey | None = None  # only where tokens are minted (the CLI), never needed to serve
    ocsp_url: str | None = None  # put in its leaves' AIA (provisioner setting ocsp = true)
    crl: bool = False  # its leaves name their CRL (``Authority.crl`` says where)


@dataclass(frozen=True)
class Issued:
    record: CertRecord
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    chain_pem: str
    roots_pem: str

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode()


@dataclass(frozen=True)
class IssuingMaterial:
    """What issuance uses, as one value: the signer, the chain handed out with each certificate
    (the signer's certificate first), the trust bundle, and their PEM forms."""

    signer: Signer
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    chain_pem: str
    roots_pem: str
    issuer_sha256: str
    tag: str = ""  # which rotation made it current ("" for the home's own intermediate)
    earlier: tuple[tuple[x509.Certificate, ...], ...] = ()  # chains of intermediates a rotation replaced

    @classmethod
    def of(cls, signer: Signer, chain: list[x509.Certificate] | tuple[x509.Certificate, ...],
           roots: list[x509.Certificate] | tuple[x509.Certificate, ...], tag: str = "",
           earlier: tuple[tuple[x509.Certificate, ...], ...] = ()) -> IssuingMaterial:
        return cls(signer, tuple(chain), tuple(roots), pem_bundle(chain), pem_bundle(roots),
                   fingerprint_sha256(signer.certificate), tag, earlier)

    def chain_for(self, der: bytes) -> tuple[x509.Certificate, ...]:
        """The chain of the CA that signed ``der``: the current one, or that of an intermediate a
        rotation replaced (a certificate signed before the switch, downloaded after it)."""
        if not self.earlier:
            return self.chain
        cert = x509.load_der_x509_certificate(der)
        if cert.issuer == self.chain[0].subject:
            return self.chain
        return next((chain for chain in self.earlier if chain and chain[0].subject == cert.issuer), self.chain)

    def chain_pem_for(self, der: bytes) -> str:
        chain = self.chain_for(der)
        return self.chain_pem if chain is self.chain else pem_bundle(chain)


Listener = Callable[[str, str], None]  # (event, provisioner) for metrics

L = TypeVar("L", bound=Ledger)


class Authority(Generic[L]):
    """Signs, renews and revokes on a ``Ledger`` (``ca.ledger``): the store is used only through
    that protocol. The type parameter keeps the concrete store's type for the composition roots
    that built it (``Authority[SqlStore]``), which also reach its other parts (observers, close)."""

    def __init__(self, signer: Signer, chain: list[x509.Certificate], roots: list[x509.Certificate],
                 store: L, provisioners: Mapping[str, Provisioner],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._material = IssuingMaterial.of(signer, chain, roots)
        self.refresher: Callable[[Authority[L]], None] | None = None  # ca.rotation_watch: a rotation's switch
        self.store = store
        self.provisioners = dict(provisioners)
        self.clock = clock
        self.listeners: list[Listener] = []
        self._token_keys = {p.name: p.public_key for p in provisioners.values() if p.public_key is not None}
        self.crl: CrlScheme | None = None  # the CRL shards and URLs, for provisioners with crl = true
        self.guard: Guard | None = None  # ca.emergency: keys and renewals an emergency refuses
        # [renewal] allow_after_expiry: a certificate expired less than this long ago still renews
        self.renew_after_expiry = timedelta(0)

    # -- the issuing material (swapped whole by a rotation) --------------------------------

    @property
    def material(self) -> IssuingMaterial:
        return self._material

    @property
    def signer(self) -> Signer:
        return self._material.signer

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._material.chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._material.roots

    @property
    def chain_pem(self) -> str:
        return self._material.chain_pem

    @property
    def roots_pem(self) -> str:
        return self._material.roots_pem

    def use(self, material: IssuingMaterial) -> None:
        """Issue with ``material`` from now on: one reference swapped, so an issuance that began
        with the old signer finishes with the old signer and chain, and the next one starts
        with the new ones."""
        self._material = material

    def refresh(self) -> None:
        """Let the rotation watcher (if any) swap in the material a rotation made current."""
        if self.refresher is not None:
            self.refresher(self)

    # -- tokens ---------------------------------------------------------------------------

    def mint_token(self, provisioner: str, subject: str, sans: list[str], ttl: timedelta = timedelta(minutes=5),
                   cert_ttl: timedelta | None = None, actor: str = "cli") -> str:
        """A bootstrap token redeemable for ``ttl``, buying a certificate of at most ``cert_ttl``;
        both are ``timedelta``, parsed at the edge (``duration_field``)."""
        for field, value in (("ttl", ttl), ("cert_ttl", cert_ttl)):
            if value is not None and not isinstance(value, timedelta):
                raise TypeError(f"{field} is a timedelta (parse text at the edge with duration_field), "
                                f"not {type(value).__name__}")
        with self._denials("token.mint", actor):
            prov = self._provisioner(provisioner)
            if prov.private_key is None:
                raise Forbidden(f"provisioner {provisioner!r} has no signing key here")
            names = _parse_names(sans or [subject])
            prov.policy.check_names(names)
            if cert_ttl is not None:
                prov.policy.check_ttl(cert_ttl)
            try:
                token, claims = tokens.mint(prov.private_key, provisioner, subject, [name_text(n) for n in names],
                                            ttl, cert_ttl=cert_ttl, now=self.clock())
            except ValueError as exc:
                raise BadRequest(str(exc), code=Code.BAD_TTL) from None
        self.store.audit(AuditEvent(actor=actor, action="token.mint", target=subject,
                                    detail={"provisioner": provisioner, "sans": list(claims.sans),
                                            "jti": claims.jti, "expires_at": format_time(claims.expires_at)}))
        return token

    # -- issue for a CSR and a bootstrap token ------------------------------------------

    def issue_for_token(self, csr_pem: str | bytes, token: str, ttl: timedelta | None = None,
                        actor: str = "api") -> Issued:
        """Issue for ``csr_pem`` on the strength of a bootstrap ``token``; ``ttl`` was parsed at the
        edge (``duration_field``), ``None`` for the token's cap or the provisioner's default."""
        if ttl is not None and not isinstance(ttl, timedelta):
            raise TypeError("ttl is a timedelta (parse text at the edge with duration_field), "
                            f"not {type(ttl).__name__}")
        with self._denials("certificate.issue", actor):
            claims = tokens.verify(token, self._token_keys, self.clock())
            prov = self._provisioner(claims.provisioner)
            request = _parse_csr(csr_pem, prov.policy)
            granted = _parse_names(claims.sans)
            names = request.names or tuple(granted)
            foreign = [name_text(n) for n in names if n not in granted]
            if foreign:
                raise Forbidden(f"the token does not cover {', '.join(foreign)} (it is bound to "
                                f"{', '.join(claims.sans)})", code=Code.TOKEN_NAME_MISMATCH, value=foreign)
            cap = duration_field("the token's ttl", claims.cert_ttl) if claims.cert_ttl else None
            asked = ttl if ttl is not None else cap
            issued = self._issue(prov, request, names, asked, claims.subject, token_jti=claims.jti,
                                 token_expires_at=claims.expires_at, ttl_cap=cap, cap_source="the token")
        self._emit("issued", prov.name)
        return issued

    # -- ACME finalize --------------------------------------------------------------------

    def issue_for_order(self, provisioner: str, csr: str | bytes | ParsedCSR, names: list[str],
                        actor: str = "acme") -> Issued:
        """Issue for an ACME order whose identifiers the caller has validated and matched to the CSR.

        The same pipeline as ``sign`` from policy on (the provisioner's rules, intent, signing,
        ledger, audit); only the authentication differs: the ACME server's authorizations stand
        in for a bootstrap token. ``csr`` may be the request the caller already parsed and checked.
        """
        with self._denials("certificate.issue", actor):
            prov = self._provisioner(provisioner)
            request = _parse_csr(csr, prov.policy)
            parsed = _parse_names(names)
            issued = self._issue(prov, request, parsed, None, name_text(parsed[0]) if parsed else "")
        self._emit("issued", prov.name)
        return issued

    # -- renew ----------------------------------------------------------------------------

    def renew(self, csr_pem: str | bytes, proof_token: str, actor: str = "api") -> Issued:
        """A new certificate for the same identity, authenticated by the current one.

        A certificate renews once: the renewal supersedes it, and a second renewal with it is
        refused (``superseded``), unless it is a retry of the first: the same CSR key within
        ``RENEWAL_RETRY_WINDOW``, with a fresh proof, gets the same new certificate back. The
        new certificate lives at most as long as the renewed one was granted. A certificate
        that expired less than ``renew_after_expiry`` ago still renews (a revoked one never).
        """
        with self._denials("certificate.renew", actor):
            # The ledger first, then the signatures: a proof for a certificate this CA did not
            # issue, and a CSR key the provisioner never signs, cost no public-key operation.
            claimed = proofs.certificate_of(proof_token)
            current = self._honoured(claimed, self.renew_after_expiry)
            proof = proofs.verify(proof_token, proofs.RENEW, certificate=claimed)
            prov = self._provisioner(current.provisioner)
            request = _parse_csr(csr_pem, prov.policy)
            if proof.claims.get("csr_sha256") != proofs.csr_digest(request.der):
                raise Unauthorized("the proof does not cover this CSR", code=Code.BAD_PROOF)
            self.store.use_token(proof.jti, "renew", proof.expires_at)
            names = _parse_names(current.sans)
            if request.names and set(request.names) != set(names):
                raise Forbidden("a renewal keeps the identity: the CSR names differ from the certificate's",
                                code=Code.IDENTITY_MISMATCH, value=[name_text(n) for n in request.names])
            if current.superseded_by is not None and retries.release_cut_renewal(self.store, self.clock(), current):
                current = replace(current, superseded_by=None)
            if current.superseded_by is not None:
                issued = self._again(retries.renewal_again(self.store, self.clock(), current,
                                                           _spki(request.public_key), lambda c: _spki(c.public_key())))
            else:
                # What the renewed certificate was granted (not_after is now + ttl at issuance, the
                # backdate aside): a lineage never grows longer than its first certificate.
                lifetime = max(current.not_after - current.requested_at, timedelta(seconds=1))
                issued = self._issue(prov, request, tuple(names), lifetime, current.subject,
                                     renewed_from=current.serial, ttl_cap=lifetime,
                                     cap_source="the renewed certificate")
        self._emit("renewed", prov.name)
        return issued

    def _again(self, record: CertRecord) -> Issued:
        """``record``'s certificate handed out again (a retry, ``ca.retries``), with its own chain."""
        assert record.der is not None
        material = self._material
        return Issued(record=record, certificate=x509.load_der_x509_certificate(record.der),
                      chain=material.chain_for(record.der), roots=material.roots,
                      chain_pem=material.chain_pem_for(record.der), roots_pem=material.roots_pem)

    def must_renew(self, serial: str) -> bool:
        """Whether an emergency replaces ``serial`` (its holder should renew now)."""
        return self.guard is not None and self.guard.renew_now(serial)

    def honoured(self, cert: x509.Certificate) -> CertRecord:
        """The ledger's record of this exact certificate, if it is issued and unexpired (it may be
        superseded: the caller decides); else 401 (not this CA's) or 403 (revoked, expired)."""
        return self._honoured(cert)

    def _honoured(self, cert: x509.Certificate, after_expiry: timedelta = timedelta(0)) -> CertRecord:
        """The ledger's record of this exact certificate, if it is issued and unexpired (or expired
        less than ``after_expiry`` ago)."""
        serial = serial_text(cert.serial_number)
        record = self.store.get(serial)
        if record is None or record.der != cert.public_bytes(Encoding.DER):
            raise Unauthorized("the certificate was not issued by this CA", code=Code.UNKNOWN_CERTIFICATE)
        if record.status == "revoked":
            raise Forbidden(f"certificate {serial} is revoked and can never be renewed", code=Code.REVOKED)
        if record.status != "issued":
            raise Unauthorized(f"certificate {serial} is {record.status}", code=Code.UNKNOWN_CERTIFICATE)
        if record.not_after + after_expiry <= self.clock():
            grace = f" (renewal is allowed up to {format_duration(after_expiry)} after expiry)" if after_expiry else ""
            raise Forbidden(f"certificate {serial} expired at {format_time(record.not_after)}: it cannot be "
                            f"renewed{grace}; bootstrap again with a new token", code=Code.EXPIRED)
        return record

    # -- revoke ---------------------------------------------------------------------------

    def revoke(self, serial: str, reason: str = "unspecified", *, admin: bool = False,
               proof_token: str | None = None, actor: str = "api") -> CertRecord:
        with self._denials("certificate.revoke", actor):
            serial = _serial(serial)
            if not admin:
                if not proof_token:
                    raise Unauthorized("revocation needs the administrator token or a proof signed by the "
                                       "certificate's key", code=Code.UNAUTHORIZED)
                claimed = proofs.certificate_of(proof_token)  # the ledger before the signature, as in renew
                if serial_text(claimed.serial_number) != serial:
                    raise Forbidden("the proof is for another certificate", code=Code.BAD_PROOF)
                record = self.store.get(serial)
                if record is None or record.der != claimed.public_bytes(Encoding.DER):
                    raise Unauthorized("the certificate was not issued by this CA", code=Code.UNKNOWN_CERTIFICATE)
                proof = proofs.verify(proof_token, proofs.REVOKE, certificate=claimed)
                if proof.claims.get("serial") != serial:
                    raise Forbidden("the proof is for another certificate", code=Code.BAD_PROOF)
                self.store.use_token(proof.jti, "revoke", proof.expires_at)
                actor = f"holder:{serial}"
            if reason not in REVOCATION_REASONS:
                raise BadRequest(f"unknown revocation reason {reason!r}; one of {', '.join(REVOCATION_REASONS)}",
                                 code=Code.BAD_REVOCATION_REASON)
            # A compromised key may have renewed its certificate: everything renewed from it goes too.
            record = self.store.revoke(serial, reason, AuditEvent(actor=actor, action="certificate.revoke",
                                                                  target=serial, detail={"reason": reason}),
                                       cascade=reason == "keyCompromise")
        self._emit("revoked", record.provisioner)
        return record

    # -- shared ---------------------------------------------------------------------------

    def _issue(self, prov: Provisioner, request: ParsedCSR, names: tuple[Name, ...], ttl: timedelta | None,
               subject: str, token_jti: str | None = None, token_expires_at: datetime | None = None,
               renewed_from: str | None = None, ttl_cap: timedelta | None = None, cap_source: str = "") -> Issued:
        now = self.clock()
        if self.guard is not None:
            self.guard.check_issue(hashlib.sha256(_spki(request.public_key)).hexdigest(), renewed_from)
        self.refresh()
        material = self._material  # one signer and chain for the whole issuance
        decision = prov.policy.decide(IssuanceRequest(
            names=names, key_type=request.key_type, key_description=request.key_description,
            asks_for_ca=request.asks_for_ca, ttl=ttl, now=now,
            issuer_not_after=material.signer.certificate.not_valid_after_utc, ttl_cap=ttl_cap, cap_source=cap_source,
        ))
        sans = tuple(name_text(n) for n in decision.names)
        crl = self.crl if prov.crl else None
        spki_sha256 = hashlib.sha256(_spki(request.public_key)).hexdigest()
        for _attempt in range(3):
            serial = new_serial()
            intent = Intent(serial=serial_text(serial), provisioner=prov.name, subject=subject, sans=sans,
                            not_before=decision.not_before, not_after=decision.not_after, requested_at=now,
                            renewed_from=renewed_from, token_jti=token_jti, token_expires_at=token_expires_at,
                            crl_shard=crl.shard(serial) if crl else None, spki_sha256=spki_sha256)
            try:
                try:
                    self.store.record_intent(intent)
                except TokenRedeemed:
                    earlier = self.store.redeem_again(intent, now - PENDING_INTENT_BOUND)
                    if earlier is not None:
                        return self._again(retries.redemption_again(self.store, earlier))
                break
            except SerialCollision:
                continue
        else:  # pragma: no cover - needs three 159-bit collisions in a row
            raise TrustyardError("could not reserve a unique serial")
        cn = next((name_text(n) for n in decision.names if isinstance(n, x509.DNSName) and len(n.value) <= 64), None)
        try:
            cert = material.signer.sign(leaf_builder(LeafSpec(
                public_key=request.public_key, names=decision.names, not_before=decision.not_before,
                not_after=decision.not_after, serial=serial, eku=decision.eku, common_name=cn,
                ocsp_url=prov.ocsp_url,
                crl_url=crl.url(material.issuer_sha256, intent.crl_shard) if crl and intent.crl_shard is not None
                else None,
            ), material.signer.certificate))
        except Exception:
            self.store.record_failed(intent.serial)
            raise
        action = "certificate.renew" if renewed_from else "certificate.issue"
        der = cert.public_bytes(Encoding.DER)
        fingerprint = fingerprint_sha256(cert)
        detail = {"subject": subject, "sans": list(sans), "lifetime": format_duration(decision.not_after - now),
                  "not_after": format_time(decision.not_after),
                  **({"renewed_from": renewed_from} if renewed_from else {})}
        stored = self.store.record_issued(intent.serial, der, fingerprint,
                                          AuditEvent(actor=prov.name, action=action, target=intent.serial,
                                                     detail=detail),
                                          issuer=material.issuer_sha256)
        if not stored:
            raise Forbidden(f"certificate {renewed_from} was revoked (key compromise) while its renewal "
                            f"{intent.serial} was being signed: the renewal is revoked too", code=Code.REVOKED)
        record = CertRecord(serial=intent.serial, provisioner=prov.name, subject=subject, sans=sans, status="issued",
                            not_before=decision.not_before, not_after=decision.not_after, requested_at=now,
                            der=der, fingerprint_sha256=fingerprint, renewed_from=renewed_from, revoked_at=None,
                            revocation_reason=None)
        return Issued(record=record, certificate=cert, chain=material.chain, roots=material.roots,
                      chain_pem=material.chain_pem, roots_pem=material.roots_pem)

    def _provisioner(self, name: str) -> Provisioner:
        prov = self.provisioners.get(name)
        if prov is None:
            raise Unauthorized(f"unknown provisioner {name!r}", code=Code.BAD_TOKEN)
        return prov

    def _emit(self, event: str, provisioner: str) -> None:
        for listener in self.listeners:
            listener(event, provisioner)

    def _denials(self, action: str, actor: str) -> _DenialAudit:
        return _DenialAudit(self, action, actor)

    def get(self, serial: str) -> CertRecord | None:
        """The ledger's record of ``serial`` (hex text, any case, leading zeros allowed)."""
        return self.store.get(_serial(serial))



class _DenialAudit:
    """Audit every refusal (4xx) of an operation with its code, rule and value; a caller that
    never authenticated (401) is counted in aggregate instead (``store.refusals``)."""

    def __init__(self, authority: Authority, action: str, actor: str) -> None:
        self.authority, self.action, self.actor = authority, action, actor

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, Unauthorized) and exc.code != Code.TOKEN_REPLAYED:
            # Never authenticated: counted per source and reason, not audited one by one. (A
            # replayed token or proof was genuine once: each replay stays an audit entry.)
            from ..store import refusals  # the SQL engine's module: imported on this path only

            self.authority.store.note_refusal(refusals.source_key(self.actor), f"{self.action}:{exc.code}",
                                              message=exc.detail[:500])
            self.authority._emit("denied", exc.code)
        elif isinstance(exc, TrustyardError) and 400 <= exc.status < 500:
            detail = {"code": exc.code, "reason": exc.detail[:500]}
            detail.update({k: v for k, v in exc.fields.items() if k in ("rule", "value")})
            self.authority.store.audit(AuditEvent(actor=self.actor, action="request.deny", target=self.action,
                                                  outcome="denied", detail=detail))
            self.authority._emit("denied", exc.code)


def _parse_csr(csr_pem: str | bytes | ParsedCSR, policy: Policy | None = None) -> ParsedCSR:
    """Parse and check a CSR; the policy's key rule runs before its signature is verified."""
    if isinstance(csr_pem, ParsedCSR):
        return csr_pem
    try:
        return parse_csr(csr_pem, policy.check_key if policy is not None else None)
    except CSRError as exc:
        raise BadRequest(str(exc), code=exc.code) from None


def _serial(text: str) -> str:
    """A serial number from a request in the one form the ledger keys on, or a 400 naming the field."""
    if not isinstance(text, str):
        raise BadRequest("serial: a serial number is hex text", code=Code.BAD_FIELD, field="serial")
    try:
        return serial_text(text)
    except ValueError as exc:
        raise BadRequest(f"serial: {exc}", code=Code.BAD_FIELD, field="serial") from None


def duration_field(field: str, text: str) -> timedelta:
    """A duration from a request, a command line or a token, or a 400 naming the field: the one
    place text becomes a ``timedelta`` on its way to the authority."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}", code=Code.BAD_TTL, field=field) from None


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _parse_names(texts: tuple[str, ...] | list[str]) -> tuple[Name, ...]:
    try:
        return tuple(dict.fromkeys(parse_name(t) for t in texts))
    except ValueError as exc:
        raise BadRequest(str(exc), code=Code.BAD_NAME) from None
