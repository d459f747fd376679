"""The OCSP responder (RFC 6960, RFC 5019 profile): what to answer, signed ahead of the request.

    request -> parse (bounded, ``x509/ocsp.py``) -> issuer by CertID hashes -> cached answer
            -> (miss only) ledger row -> sign -> cache

- **Delegated responder, per issuer.** Each issuing intermediate this process has issued with
  gets an OCSP signing certificate (id-kp-OCSPSigning, ocsp-nocheck, ``RESPONDER_LIFETIME``)
  for a P-256 key kept in memory only: every worker (and replica) makes its own on its first
  OCSP request, so no key is shared through files or raced for, and each answer carries the
  certificate that verifies it. It is renewed at 2/3 of its life by ``tick``; making one is
  audited (``ocsp.responder``). Intermediates a rotation replaced keep answering
  (``add_issuers``, from ``HomeMaterial.earlier_signers`` at worker start).
- **Signed once, served many times.** An answer is signed on the first request for a
  (issuer, serial) and cached in memory (``cache_size`` serials, oldest dropped first) until
  half of its ``RESPONSE_LIFETIME``; after that it is still served while ``tick`` (in the
  background) signs its successor. A steady-state request costs one dict lookup and no
  signature. Eager pre-signing of the whole ledger is not done: a million revoked serials that
  nobody asks about would cost a million signatures per lifetime.
- **Nonces are ignored** (RFC 5019 2.2.1, allowed by RFC 8954): a pre-signed answer cannot echo
  one. A client that insists gets the answer without the nonce.
- **Revocation is seen at once here, within ``POLL_SECONDS`` elsewhere.** A revocation recorded
  through this process's store drops that serial's answers when it commits (a store observer);
  ``tick`` asks the ledger every ``POLL_SECONDS`` for certificates revoked since it last looked
  (``store/ocsp_store.py``, an indexed range on ``revoked_at``, ``POLL_OVERLAP`` back to cover
  transactions that committed late) and drops theirs: other workers and replicas follow within
  about a second.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from ..store import ocsp_store
from ..store.records import AuditEvent
from ..x509 import ocsp as proto
from ..x509.keys import KeyType, PrivateKey, generate_private_key
from ..x509.summary import fingerprint_sha256, serial_text
from .authority import Authority, IssuingMaterial
from .signer import Signer

log = logging.getLogger("trustyard.ocsp")

RESPONDER_LIFETIME = timedelta(days=7)
RESPONSE_LIFETIME = timedelta(hours=4)
BACKDATE = timedelta(minutes=1)  # thisUpdate a little in the past: clients' clocks differ
POLL_SECONDS = 1.0
POLL_OVERLAP = timedelta(seconds=5)
POLL_LIMIT = 10_000  # more revocations than this in one poll: drop every cached answer
REFRESH_PER_TICK = 2_000


@dataclass(frozen=True)
class Answer:
    der: bytes
    etag: str
    status: str
    this_update: datetime
    next_update: datetime
    stale_at: float  # epoch seconds: re-sign in the background from then on
    expires_at: float  # epoch seconds: never served after (nextUpdate)


@dataclass
class _Responder:
    certificate: x509.Certificate
    key: PrivateKey
    renew_at: datetime


class _Issuer:
    """One issuing intermediate: its signer (to certify responders) and current responder."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.certificate = signer.certificate
        self.fingerprint = fingerprint_sha256(signer.certificate)
        try:
            self.ski = signer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            self.ski = b""
        self.responder: _Responder | None = None


@dataclass(frozen=True)
class Miss:
    """A question the cache cannot answer: the ledger and a signature are needed (``resolve``)."""

    question: proto.Question
    issuer: _Issuer


class OcspResponder:
    """Answers OCSP questions for the intermediates ``authority`` issues (or issued) with."""

    def __init__(self, authority: Authority[Any], cache_size: int = 200_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.authority = authority
        self.store = authority.store
        self.clock = clock
        self.cache_size = cache_size
        self.signatures = 0  # responses signed by this process (a steady state adds none)
        self._issuers: dict[proto.IssuerKey, _Issuer] = {}
        self._material: IssuingMaterial | None = None
        self._cache: dict[int, dict[proto.IssuerKey, Answer]] = {}
        # A request's bytes always ask the same question: a repeated request skips the parse.
        self._questions: dict[bytes, tuple[proto.Question, _Issuer]] = {}
        self._stale: dict[tuple[int, proto.IssuerKey], Miss] = {}
        self._dropped: dict[int, int] = {}  # serial -> epoch of its last drop
        self._epoch = 0
        self._lock = threading.Lock()  # writers of the cache and the issuers; readers take none
        self._watermark = self.clock() - POLL_OVERLAP
        self._learn_material()
        self.store.observers.append(self._observe)

    # -- the request path ------------------------------------------------------------------

    def lookup(self, der: bytes) -> bytes | Answer | Miss:
        """The answer from memory (``Answer``), an unsuccessful response (bytes), or a ``Miss``.
        Never signs and never touches the database."""
        known = self._questions.get(der)
        if known is not None:
            question, issuer = known
        else:
            try:
                question = proto.parse_request(der)
            except ValueError:
                return proto.MALFORMED
            found = self._issuers.get(question.issuer)
            if found is None:
                return proto.UNAUTHORIZED  # not one of ours (RFC 5019 2.2.3)
            issuer = found
            if question.nonce is None:  # with a nonce, the bytes are never seen again
                if len(self._questions) >= self.cache_size:
                    self._questions.clear()
                self._questions[der] = (question, issuer)
        answers = self._cache.get(question.serial)
        answer = answers.get(question.issuer) if answers is not None else None
        if answer is not None:
            now = time.time()
            if now < answer.stale_at:
                return answer
            if now < answer.expires_at:
                self._stale[(question.serial, question.issuer)] = Miss(question, issuer)
                return answer
        return Miss(question, issuer)

    def resolve(self, miss: Miss) -> bytes | Answer:
        """Read the ledger and sign (blocking: run it off the event loop); tryLater on trouble."""
        try:
            return self._resolve(miss)
        except Exception:
            log.exception("OCSP: could not answer for serial %x", miss.question.serial)
            return proto.TRY_LATER

    def _resolve(self, miss: Miss) -> Answer:
        question, issuer = miss.question, miss.issuer
        epoch = self._epoch
        status, revoked_at, reason, keep = self._ledger_status(question.serial, issuer)
        now = self.clock()
        responder = self._responder(issuer, now)
        this_update = now - BACKDATE
        next_update = min(this_update + RESPONSE_LIFETIME, responder.certificate.not_valid_after_utc)
        der = proto.signed_response(question, status, this_update, next_update, responder.certificate,
                                    responder.key, revoked_at, reason)
        self.signatures += 1
        lifetime = (next_update - this_update).total_seconds()
        answer = Answer(der, f'"{hashlib.sha256(der).hexdigest()[:40]}"', status, this_update, next_update,
                        this_update.timestamp() + lifetime / 2, next_update.timestamp())
        if keep:
            with self._lock:
                if self._dropped.get(question.serial, -1) <= epoch:  # not dropped since the read began
                    self._store(question.serial, question.issuer, answer)
        return answer

    def _ledger_status(self, serial: int, issuer: _Issuer) -> tuple[str, datetime | None, str | None, bool]:
        """(status, revoked_at, reason, cacheable) of ``serial`` under ``issuer``."""
        if serial <= 0 or serial.bit_length() > 160:
            return "unknown", None, None, True
        row = ocsp_store.status(self.store, serial_text(serial))
        if row is None or not self._issued_by(row, issuer):
            return "unknown", None, None, True
        if row.status == "issued":
            return "good", None, None, True
        if row.status == "revoked":
            return "revoked", row.revoked_at, row.revocation_reason, True
        return "unknown", None, None, row.status != "pending"  # pending: about to be issued

    @staticmethod
    def _issued_by(row: ocsp_store.LedgerStatus, issuer: _Issuer) -> bool:
        if row.issuer_sha256:
            return row.issuer_sha256 == issuer.fingerprint
        if row.der is None:  # an intent not signed yet: this issuer is about to sign it
            return True
        try:  # a row from before the issuer column: its AKI names the issuer
            aki = x509.load_der_x509_certificate(row.der).extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier).value.key_identifier
        except (ValueError, x509.ExtensionNotFound):
            return False
        return aki == issuer.ski

    def _store(self, serial: int, issuer_key: proto.IssuerKey, answer: Answer) -> None:
        answers = self._cache.get(serial)
        if answers is None:
            while len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[serial] = {issuer_key: answer}
        else:
            answers[issuer_key] = answer

    # -- responders --------------------------------------------------------------------------

    def _responder(self, issuer: _Issuer, now: datetime) -> _Responder:
        current = issuer.responder
        if current is not None and now < current.renew_at:
            return current
        with self._lock:
            current = issuer.responder
            if current is not None and now < current.renew_at:
                return current
            key = generate_private_key(KeyType.EC_P256)
            not_before = now.replace(microsecond=0) - BACKDATE
            cert = issuer.signer.sign(proto.responder_builder(key.public_key(), issuer.certificate, not_before,
                                                              RESPONDER_LIFETIME))
            life = cert.not_valid_after_utc - not_before
            issuer.responder = _Responder(cert, key, not_before + life * 2 / 3)
        try:
            self.store.audit(AuditEvent(actor="ocsp", action="ocsp.responder", target=serial_text(cert.serial_number),
                                        detail={"issuer_sha256": issuer.fingerprint,
                                                "not_after": cert.not_valid_after_utc.isoformat()}))
        except Exception:  # the responder works without its audit entry; say so
            log.exception("OCSP: could not audit the new responder certificate")
        log.info("OCSP responder certificate %s for %s until %s", serial_text(cert.serial_number),
                 issuer.certificate.subject.rfc4514_string(), cert.not_valid_after_utc)
        return issuer.responder

    def add_issuers(self, signers: list[Signer]) -> None:
        """Answer for these intermediates too (ones a rotation replaced before this process began)."""
        known = {i.fingerprint for i in self._issuers.values()}
        for signer in signers:
            issuer = _Issuer(signer)
            if issuer.fingerprint in known:
                continue
            known.add(issuer.fingerprint)
            with self._lock:
                for key in proto.issuer_keys(issuer.certificate):
                    self._issuers[key] = issuer

    def _learn_material(self) -> None:
        """Answer for the intermediate that issues now, and keep answering for earlier ones this
        process issued with (a rotation swaps the material; their certificates live on)."""
        material = self.authority.material
        if material is self._material:
            return
        self._material = material
        if any(i.fingerprint == material.issuer_sha256 for i in self._issuers.values()):
            return
        issuer = _Issuer(material.signer)
        with self._lock:
            for key in proto.issuer_keys(issuer.certificate):
                self._issuers[key] = issuer

    # -- revocations -------------------------------------------------------------------------

    def drop(self, serials: list[str] | list[int]) -> None:
        """Forget the answers for ``serials`` (hex text or int): the next request re-reads the ledger."""
        with self._lock:
            self._epoch += 1
            if len(self._dropped) > 100_000:
                self._dropped.clear()
            for serial in serials:
                number = serial if isinstance(serial, int) else int(serial, 16)
                self._cache.pop(number, None)
                self._dropped[number] = self._epoch

    def _observe(self, event: AuditEvent) -> None:
        if event.action == "certificate.revoke" and event.outcome == "ok":
            self.drop([event.target, *event.detail.get("descendants", [])])

    def poll_revocations(self) -> None:
        rows = ocsp_store.revoked_since(self.store, self._watermark - POLL_OVERLAP, POLL_LIMIT)
        if len(rows) >= POLL_LIMIT:
            # A mass revocation (or a bulk load): forget every answer, and look only past the
            # newest revocation from now on (the next poll must not find the same rows again).
            newest = ocsp_store.newest_revocation(self.store) or rows[-1][1]
            with self._lock:
                self._epoch += 1
                self._cache.clear()
                self._dropped.clear()
            self._watermark = newest + POLL_OVERLAP
            return
        changed = []
        for serial, _at in rows:
            answers = self._cache.get(int(serial, 16))
            if answers and any(a.status != "revoked" for a in answers.values()):
                changed.append(serial)
        if changed:
            self.drop(changed)
        if rows:
            self._watermark = max(self._watermark, rows[-1][1])

    # -- background ------------------------------------------------------------------------

    def tick(self) -> None:
        """One round of upkeep (every ``POLL_SECONDS``): rotation, revocations, stale answers,
        responder renewal. Each part fails alone."""
        steps: list[Callable[[], None]] = [self._follow_rotation, self.poll_revocations, self._refresh_stale,
                                           self._renew_responders]
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("OCSP upkeep: %s failed; it runs again next tick", step.__name__)

    def _follow_rotation(self) -> None:
        self.authority.refresh()
        self._learn_material()

    def _refresh_stale(self) -> None:
        for _ in range(min(len(self._stale), REFRESH_PER_TICK)):
            try:
                _key, miss = self._stale.popitem()
            except KeyError:
                return
            self._resolve(miss)

    def _renew_responders(self) -> None:
        now = self.clock()
        for issuer in set(self._issuers.values()):
            if issuer.responder is not None and now >= issuer.responder.renew_at:
                self._responder(issuer, now)
