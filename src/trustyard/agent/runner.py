"""The run loop: one :class:`ManagedCert` per certificate, driven by :class:`Agent`.

A ManagedCert is a small state machine advanced by ``step(now)``; ``next_at`` says
when it wants the next step. In each step it does exactly one of:

- bootstrap (no usable certificate): key + CSR here, redeem the one-time token;
- renew (the renewal point has passed): new key, CSR, a proof signed by the current key;
- activate (files written, the service not yet proven to use them): run the reload
  action, then with a verify endpoint confirm the new serial is served, reloading once
  more after the grace period before calling it a failure.

Every failure keeps the current files, counts, and schedules a retry with backoff (capped at
a minute, so after a CA outage an overdue renewal reaches the CA within a minute of its
return), or, when the CA answered 503/429 with Retry-After, at Retry-After plus jitter
(``client.retry_delay``), never earlier. What retrying cannot fix: a policy refusal or a bad
request (400/403 problems) sets ``refusal``, and the Agent stops with exit status 2 and the
CA's message. A certificate the CA will not renew (expired, revoked, superseded, or
``bootstrapRequired`` after an emergency replacement) makes the agent wait for a new
bootstrap token in its token file (``needs_bootstrap``, in its status, metrics and check-ins).

An expired certificate is renewed first (the CA may allow it, ``[renewal]
allow_after_expiry``); only the CA's ``expired`` refusal sends the agent to a bootstrap token.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .. import __version__, errors
from ..ca import proofs
from ..client import (
    MAX_RETRY_AFTER,
    CAUnavailable,
    IssuedFiles,
    TrustBundle,
    make_csr,
    new_key_and_csr,
    retry_delay,
)
from ..errors import Code, ExitCode
from ..units import format_time, humanize
from ..x509.keys import KeyType, PrivateKey, generate_private_key, key_type_of
from ..x509.names import name_text, sans_of
from ..x509.summary import serial_text
from . import actions
from .anchors import Anchors
from .config import AgentConfig, CertSpec
from .schedule import Backoff, Level, Status, assess
from .seams import CABackend, Clock, Current, Output

log = logging.getLogger("trustyard.agent")

# Exit statuses of --once and of a run that stops: names of the CLI's one table (errors.ExitCode).
EXIT_OK, EXIT_FAILED = ExitCode.OK, ExitCode.FAILED
EXIT_REFUSED = ExitCode.USAGE  # the CA refused the agent's settings: retrying cannot fix them
EXIT_REBOOTSTRAP = ExitCode.NEEDS_TOKEN
PROBE_INTERVAL_SECONDS = 0.25
CHECKIN_JITTER = 0.10  # +- share of the check-in interval
CHECKIN_PROOF_LIFETIME = timedelta(minutes=1)
MAX_CHECKIN_HOLD = 3600  # the most a check-in retry-after directive may hold check-ins back, seconds
# Problem codes after which only a new bootstrap token helps (every one is raised by the CA:
# tests/test_error_vocabulary.py checks). BOOTSTRAP_REQUIRED: the CA replaced its material in an
# emergency and asks every holder to bootstrap again.
_DEAD_CODES = {Code.EXPIRED, Code.REVOKED, Code.UNKNOWN_CERTIFICATE, Code.SUPERSEDED, Code.BOOTSTRAP_REQUIRED}
# Problem codes that refuse the bootstrap token itself.
_TOKEN_CODES = {Code.TOKEN_EXPIRED, Code.BAD_TOKEN, Code.TOKEN_REPLAYED, Code.TOKEN_NAME_MISMATCH}
# What to change when the CA refuses by policy, per rule (the problem's ``rule`` field).
_POLICY_HINTS = {
    "ttl_bounds": "give a --ttl (ttl in the config file) within those bounds, or have the CA's operator change "
                  "the provisioner's min_ttl/max_ttl",
    "names_allowed": "request names the provisioner allows, or have the CA's operator add them to its allow list",
    "key_type_allowed": "choose an allowed --key-type",
}


@dataclass
class Counters:
    renewals: int = 0
    bootstraps: int = 0
    failures: int = 0
    reloads: int = 0
    verify_failures: int = 0
    roots_updates: int = 0
    roots_refused: int = 0


DEFAULT_BACKOFF = Backoff()


class ManagedCert:
    def __init__(self, spec: CertSpec, backend: CABackend, output: Output, clock: Clock,
                 rng: random.Random | None = None, backoff: Backoff = DEFAULT_BACKOFF,
                 environ: dict[str, str] | None = None,
                 reload: Callable[..., str] = actions.run_reload,
                 probe: Callable[..., actions.Probe] = actions.served_serial,
                 anchors: Anchors | None = None) -> None:
        self.spec, self.backend, self.output, self.clock = spec, backend, output, clock
        self.anchors = anchors  # the roots a fetched trust bundle must hold one of (agent/anchors.py)
        self._refused_bundle: str | None = None
        self.rng = rng or random.Random()
        self.backoff = backoff
        self.environ = environ if environ is not None else {}
        self._reload, self._probe = reload, probe
        self.current: Current | None = None
        self.next_at: datetime = clock.now()
        self.renew_point: datetime | None = None
        self.failures = 0                       # consecutive
        self.failing_since: datetime | None = None
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.needs_bootstrap = False
        self.pending_serial: int | None = None  # written, not yet proven active
        self.verify_ok: bool | None = None
        self.used_token: str | None = None
        self.token_refused: str | None = None  # why the CA refused used_token
        self.refusal: str | None = None       # a refusal retrying cannot fix: the agent stops
        self.counters = Counters()
        self._warned_budget = False
        self._late_by = timedelta(0)  # how late the renewal in flight is, for the next plan
        self._renewal: tuple[int, PrivateKey, bytes] | None = None  # (serial renewed, key, CSR) of the last attempt

    # -- state -------------------------------------------------------------------------

    @property
    def not_after(self) -> datetime | None:
        return self.current.chain[0].not_valid_after_utc if self.current else None

    @property
    def serial(self) -> int | None:
        return self.current.chain[0].serial_number if self.current else None

    def status(self, now: datetime | None = None) -> Status:
        now = now or self.clock.now()
        if self.refusal:
            return Status(Level.ERROR, self.refusal)
        if self.needs_bootstrap:
            return Status(Level.ERROR, self.last_error or "needs a new bootstrap token")
        status = assess(now, self.current.issued_at if self.current else None, self.not_after,
                        self.failing_since, self.spec.error_before)
        if self.verify_ok is False and status.level is Level.OK:
            return Status(Level.WARNING, f"{status.message}; the endpoint does not serve the new certificate yet")
        return status

    def report(self, now: datetime | None = None) -> dict[str, object]:
        now = now or self.clock.now()
        status = self.status(now)
        na = self.not_after
        return {
            "name": self.spec.name, "out": self.output.describe(), "level": status.level.value,
            "status": status.message, "serial": serial_text(self.serial) if self.serial is not None else None,
            "not_after": format_time(na) if na else None,
            "seconds_left": int((na - now).total_seconds()) if na else None,
            "next_renewal": format_time(self.renew_point) if self.renew_point else None,
            "last_success": format_time(self.last_success) if self.last_success else None,
            "consecutive_failures": self.failures, "last_error": self.last_error,
            "needs_bootstrap": self.needs_bootstrap, "verify_ok": self.verify_ok,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Pick up the files a previous run left, so a restart needs no new token."""
        now = self.clock.now()
        current = self.output.load()
        if current is not None and current.chain[0].not_valid_after_utc > now:
            self.current = current
            self._schedule_renewal(now)
            log.info("%s: using the existing certificate in %s (serial %s, %s)", self.spec.name,
                     self.output.describe(), serial_text(current.chain[0].serial_number),
                     assess(now, current.issued_at, self.not_after, None).message)
        else:
            if current is not None:
                self.current = current
            self.next_at = now

    def due(self, now: datetime) -> bool:
        return now >= self.next_at

    def step(self, now: datetime | None = None) -> None:
        now = now or self.clock.now()
        needed_token = self.needs_bootstrap
        self._step(now)
        if self.needs_bootstrap and not needed_token and self.due(now):
            self._step(now)  # the CA will not renew, and a new token is waiting already: use it now

    def _step(self, now: datetime) -> None:
        try:
            if self.pending_serial is not None:
                self._activate(now, self.pending_serial)
            elif self.current is None or self.needs_bootstrap:
                self._bootstrap(now)
            else:  # an expired certificate too: the CA may renew it (allow_after_expiry), else says expired
                self._renew(now)
        except CAUnavailable as exc:
            self._failed(now, str(exc.detail), retry_after=exc.retry_after)
        except errors.TrustyardError as exc:
            if exc.code in _DEAD_CODES:
                self._dead(now, exc)
            elif exc.status in (400, 403):
                self._refused(now, exc)
            else:
                self._failed(now, f"[{exc.code}] {exc.detail}", level=logging.ERROR)
        except actions.ReloadFailed as exc:
            self._failed(now, str(exc), level=logging.ERROR)
        except OSError as exc:
            self._failed(now, f"cannot write to {self.output.describe()}: {exc}", level=logging.ERROR)

    # -- the three actions -------------------------------------------------------------

    def _bootstrap(self, now: datetime) -> None:
        self._late_by = timedelta(0)  # a new certificate starts a new rhythm
        token = self._token()
        if token is not None and token == self.used_token and self.token_refused:
            self._needs_token(now, self._token_refused_text(self.token_refused, now))
            return
        if token is None or token == self.used_token:
            why = self._rebootstrap_text(now) if self.current else (
                f"no bootstrap token: put a one-time token in {self._token_source()}")
            self._needs_token(now, why)
            return
        self.used_token, self.token_refused = token, None
        key, csr = new_key_and_csr(self.spec.key_type, self.spec.names)
        try:
            issued = self.backend.sign(csr, token, self.spec.ttl)
        except CAUnavailable:
            self.used_token = None  # not redeemed: the same token is good for the retry
            raise
        except errors.TrustyardError as exc:
            if exc.code in _TOKEN_CODES or exc.status == 401:
                self.token_refused = f"{exc.detail} [{exc.code}]"
                self._needs_token(now, self._token_refused_text(self.token_refused, now))
                return
            raise
        self.needs_bootstrap = False
        self.counters.bootstraps += 1
        self._install(now, issued, key, "issued")

    def _renew(self, now: datetime) -> None:
        assert self.current is not None
        self._late_by = now - self.renew_point if self.failures and self.renew_point else timedelta(0)
        serial = self.current.chain[0].serial_number
        if self._renewal is not None and self._renewal[0] == serial:
            # The last attempt may have succeeded with its answer lost: the same key makes this a
            # retry, which the CA answers with that certificate (a certificate renews only once).
            _, key, csr = self._renewal
        else:
            key = generate_private_key(key_type_of(self.current.key) or KeyType.EC_P256)
            csr = make_csr(key, [])
            self._renewal = (serial, key, csr)
        csr_der = x509.load_pem_x509_csr(csr).public_bytes(Encoding.DER)
        proof = proofs.make(self.current.key, self.current.chain, proofs.RENEW,
                            csr_sha256=proofs.csr_digest(csr_der))
        issued = self.backend.renew(csr, proof)
        self.counters.renewals += 1
        self._install(now, issued, key, "renewed")

    def _install(self, now: datetime, issued: IssuedFiles, key: PrivateKey, verb: str) -> None:
        chain = x509.load_pem_x509_certificates((issued.certificate_pem + issued.chain_pem).encode())
        self.output.write(issued, key)
        if self.anchors is not None and not self.anchors.saved:
            self.anchors.save()  # the roots it was bootstrapped with, recorded beside the files
        # Only now, with the files on disk, may the service be told to reload.
        self.current = Current(chain, key, max(now, chain[0].not_valid_before_utc))
        leaf = chain[0]
        log.info("%s: %s certificate serial %s subject %s issuer %s SANs %s notAfter %s (in %s); wrote %s "
                 "with trust bundle version %s",
                 self.spec.name, verb, serial_text(leaf.serial_number), leaf.subject.rfc4514_string() or "-",
                 leaf.issuer.rfc4514_string(), ",".join(name_text(n) for n in sans_of(leaf)),
                 format_time(leaf.not_valid_after_utc), humanize(leaf.not_valid_after_utc - now),
                 self.output.describe(), _version_text(issued.bundle),
                 extra={"event": verb, "certificate": self.spec.name, "serial": serial_text(leaf.serial_number),
                        "bundle_version": issued.bundle.version, "bundle_sha256": issued.bundle.sha256,
                        "subject": leaf.subject.rfc4514_string(), "issuer": leaf.issuer.rfc4514_string(),
                        "sans": [name_text(n) for n in sans_of(leaf)],
                        "not_after": format_time(leaf.not_valid_after_utc)})
        self._activate(now, leaf.serial_number)

    def _activate(self, now: datetime, serial: int) -> None:
        """Reload, and with a verify endpoint, prove the new certificate is live."""
        self.pending_serial = serial
        if self.spec.reload.configured:
            done = self._reload(self.spec.reload, self.spec.out)
            self.counters.reloads += 1
            log.info("%s: reload: %s", self.spec.name, done)
        if self.spec.verify_endpoint is not None:
            if not self._served_within_grace(serial):
                if self.spec.reload.configured:
                    log.warning("%s: the endpoint still serves the old certificate after %s: reloading again",
                                self.spec.name, humanize(self.spec.verify_grace))
                    self._reload(self.spec.reload, self.spec.out)
                    self.counters.reloads += 1
                if not self._served_within_grace(serial):
                    self.verify_ok = False
                    self.counters.verify_failures += 1
                    host, port = self.spec.verify_endpoint
                    self._failed(self.clock.now(), f"{host}:{port} still does not serve serial {serial_text(serial)} "
                                 f"after two reloads: the service is not using the renewed certificate",
                                 level=logging.ERROR)
                    return
            self.verify_ok = True
            log.info("%s: %s:%d serves serial %s", self.spec.name, *self.spec.verify_endpoint, serial_text(serial))
        self.pending_serial = None
        self._succeeded(self.clock.now())

    def _served_within_grace(self, serial: int) -> bool:
        assert self.spec.verify_endpoint is not None
        host, port = self.spec.verify_endpoint
        deadline = self.clock.now() + self.spec.verify_grace
        names = [n for n in self.spec.names if not n.startswith(("spiffe:", "http:", "https:"))]
        while True:
            probe = self._probe(host, port, names[0] if names and not names[0][0].isdigit() else None,
                                self.output_path("tls.crt"), self.output_path("tls.key"))
            if probe.serial == serial:
                return True
            if self.clock.now() >= deadline or not self.clock.sleep(PROBE_INTERVAL_SECONDS):
                return False

    def output_path(self, name: str) -> object:
        return self.spec.out / name

    # -- outcomes ----------------------------------------------------------------------

    def _succeeded(self, now: datetime) -> None:
        if self.failures:
            log.info("%s: renewal works again after %d failure(s)", self.spec.name, self.failures)
        self.failures = 0
        self.failing_since = None
        self.last_error = None
        self.last_success = now
        self._schedule_renewal(now)

    def _schedule_renewal(self, now: datetime) -> None:
        assert self.current is not None
        late_by, self._late_by = self._late_by, timedelta(0)
        plan = self.spec.schedule.plan(self.current.issued_at, self.current.chain[0].not_valid_after_utc, late_by)
        if plan.warning and not self._warned_budget:
            log.warning("%s: %s", self.spec.name, plan.warning, extra={"event": "outage_budget"})
            self._warned_budget = True
        self.renew_point = plan.pick(self.rng)
        self.next_at = max(self.renew_point, now)
        log.info("%s: renewing at %s (in %s): %s", self.spec.name, format_time(self.renew_point),
                 humanize(self.renew_point - now), plan.explain(self.renew_point),
                 extra={"event": "planned", "certificate": self.spec.name, "renew_at": format_time(self.renew_point)})

    def _failed(self, now: datetime, why: str, level: int = logging.WARNING, retry_after: float | None = None) -> None:
        """Count the failure and retry: with backoff, or after the CA's Retry-After plus jitter."""
        self.failures += 1
        self.counters.failures += 1
        self.failing_since = self.failing_since or now
        self.last_error = why
        left = self.not_after - now if self.not_after else None
        left = left if left and left > timedelta(0) else None
        if retry_after is not None:  # the CA said when: not earlier, and not all of us at once,
            delay = timedelta(seconds=retry_delay(min(retry_after, MAX_RETRY_AFTER), self.rng))
            if left is not None:  # but never so late that the certificate expires meanwhile
                delay = min(delay, max(left / 4, self.backoff.floor))
        else:
            delay = self.backoff.delay(self.failures, self.rng, left)
        self.next_at = now + delay
        status = self.status(now)
        if status.level is Level.ERROR:
            level = logging.ERROR
        log.log(level, "%s: %s; %s; retry in %s", self.spec.name, status.message, why, humanize(delay),
                extra={"event": "failure", "certificate": self.spec.name, "level_name": status.level.value,
                       "consecutive_failures": self.failures})

    def _dead(self, now: datetime, exc: errors.TrustyardError) -> None:
        why = ("the CA asks this agent to bootstrap again (its certificate will not be renewed)"
               if exc.code == Code.BOOTSTRAP_REQUIRED else exc.detail)
        self._needs_token(now, f"{why} [{exc.code}]. " + self._rebootstrap_text(now))
        token = self._token()
        if token is not None and token != self.used_token:  # a new token is waiting already: use it now
            self.next_at = now

    def _needs_token(self, now: datetime, why: str) -> None:
        self.needs_bootstrap = True
        self.failures += 1
        self.counters.failures += 1
        self.failing_since = self.failing_since or now
        self.last_error = why
        # Look for a new token now and then; the operator may drop one into the file.
        self.next_at = now + self.backoff.delay(self.failures, self.rng)
        log.error("%s: %s", self.spec.name, why, extra={"event": "needs_bootstrap", "certificate": self.spec.name})

    def _token_refused_text(self, reason: str, now: datetime) -> str:
        refused = f"the CA refused the bootstrap token in {self._token_source()}: {reason}"
        return f"{refused}; {self._rebootstrap_text(now)}" if self.current else \
            f"{refused}; put a new one-time token there (trustyard token {self.spec.name})"

    def _refused(self, now: datetime, exc: errors.TrustyardError) -> None:
        """A refusal the same request would meet again: record it; the Agent stops."""
        rule = exc.fields.get("rule")
        what = f"the CA refused by policy (rule {rule}" + (f", value {exc.fields['value']}" if "value" in exc.fields
                                                            else "") + ")" if rule else \
            f"the CA refused the request ({exc.status} {exc.code})"
        hint = _POLICY_HINTS.get(str(rule), "fix the agent's settings or the CA's policy")
        self.refusal = f"{what}: {exc.detail}. Retrying cannot fix this: {hint}, then start the agent again"
        self.failures += 1
        self.counters.failures += 1
        self.last_error = self.refusal
        log.error("%s: %s", self.spec.name, self.refusal,
                  extra={"event": "refused", "certificate": self.spec.name})

    def in_place(self) -> str:
        """What is really on disk now: the certificate's serial and notAfter, or nothing."""
        current = self.output.load()
        if current is None:
            return f"{self.spec.name}: no certificate in place in {self.output.describe()}"
        leaf = current.chain[0]
        left = leaf.not_valid_after_utc - self.clock.now()
        state = f"expires in {humanize(left)}" if left > timedelta(0) else f"EXPIRED {humanize(-left)} ago"
        return (f"{self.spec.name}: serial {serial_text(leaf.serial_number)} in place in {self.output.describe()}, "
                f"notAfter {format_time(leaf.not_valid_after_utc)} ({state})")

    def _rebootstrap_text(self, now: datetime) -> str:
        na = self.not_after
        when = f"expired at {format_time(na)}" if na and na <= now else "can no longer be renewed"
        return (f"the certificate in {self.output.describe()} {when}: the CA cannot renew it. Re-bootstrap: "
                f"mint a new one-time token (trustyard token {self.spec.name}) and put it in "
                f"{self._token_source()}")

    def _token(self) -> str | None:
        if self.spec.token_file is not None:
            try:
                text = self.spec.token_file.read_text().strip()
            except OSError:
                text = ""
            if text:
                return text
        return self.environ.get(self.spec.token_env) or None

    def _token_source(self) -> str:
        return str(self.spec.token_file) if self.spec.token_file else f"${self.spec.token_env}"

    # -- check-in ----------------------------------------------------------------------

    def checkin_proof(self, interval: timedelta) -> str | None:
        """A check-in proof (``ca.fleet``) signed by the current key, carrying this certificate's
        report; None while there is no certificate to authenticate with."""
        if self.current is None or self.current.chain[0].not_valid_after_utc <= self.clock.now():
            return None  # (while it needs a token, its valid certificate still reports last_error)
        version, sha = self.output.bundle_version()
        leaf = self.current.chain[0]
        report = {
            "instance": self.output.instance_id(), "kind": "agent", "name": self.spec.name,
            "serial": serial_text(leaf.serial_number), "not_after": format_time(leaf.not_valid_after_utc),
            "bundle_version": version, "bundle_sha256": sha, "endpoint_serial": self._endpoint_serial(),
            "failures": self.failures, "last_error": self.last_error, "agent_version": __version__,
            "interval_seconds": max(1, round(interval.total_seconds())),
        }
        # x5c: the leaf alone (the CA compares it with its ledger; the chain would only cost bytes)
        return proofs.make(self.current.key, [leaf], proofs.CHECKIN, lifetime=CHECKIN_PROOF_LIFETIME, report=report)

    def _endpoint_serial(self) -> str | None:
        if self.spec.verify_endpoint is None:
            return None
        host, port = self.spec.verify_endpoint
        probe = self._probe(host, port, None, self.output_path("tls.crt"), self.output_path("tls.key"))
        return serial_text(probe.serial) if probe.serial is not None else None

    def renew_now(self, now: datetime) -> None:
        """The CA asks for a renewal now (a ``renew-now`` directive)."""
        if self.current is None or self.needs_bootstrap or self.pending_serial is not None:
            return
        log.info("%s: the CA asks for a renewal now", self.spec.name,
                 extra={"event": "renew_now", "certificate": self.spec.name})
        self.next_at = now

    # -- trust bundle ------------------------------------------------------------------

    def update_bundle(self, bundle: TrustBundle | str) -> bool:
        """Write a changed trust bundle (``ca.crt``, the truststores, ``bundle.json``: one
        generation) and tell the service; True when it changed."""
        if isinstance(bundle, str):
            bundle = TrustBundle(bundle)
        if self.output.has_bundle(bundle):
            return False
        if self.anchors is not None:
            verdict = self.anchors.judge(bundle.pem)
            if not verdict.accepted:
                self.counters.roots_refused += 1
                if self._refused_bundle != bundle.pem:  # once per bundle, not at every poll
                    self._refused_bundle = bundle.pem
                    log.error("%s: refusing the CA's new trust bundle: %s; keeping %s/ca.crt", self.spec.name,
                              verdict.reason, self.output.describe(),
                              extra={"event": "roots_refused", "certificate": self.spec.name})
                return False
            self.anchors.add(verdict.added)
        self.output.write_ca(bundle)
        self.counters.roots_updates += 1
        log.info("%s: the CA's trust bundle changed: wrote version %s (sha256 %s) to %s", self.spec.name,
                 _version_text(bundle), bundle.sha256[:16], self.output.describe(),
                 extra={"event": "roots_updated", "certificate": self.spec.name, "bundle_version": bundle.version,
                        "bundle_sha256": bundle.sha256})
        if self.spec.reload.configured:
            try:
                log.info("%s: reload: %s", self.spec.name, self._reload(self.spec.reload, self.spec.out))
                self.counters.reloads += 1
            except actions.ReloadFailed as exc:
                log.error("%s: reload after the bundle changed failed: %s", self.spec.name, exc)
        return True


class Agent:
    """Drives every ManagedCert and polls the trust bundle; ``run()`` until ``stop()``."""

    MAX_NAP = timedelta(seconds=30)

    def __init__(self, config: AgentConfig, backend: CABackend, managed: Iterable[ManagedCert],
                 clock: Clock, rng: random.Random | None = None) -> None:
        self.config, self.backend, self.clock = config, backend, clock
        self.managed = list(managed)
        self.rng = rng or random.Random()
        self.roots_etag: str | None = None
        self.roots_next = clock.now()
        self.roots_failures = 0
        self.started = False
        self.checkin_interval = config.checkin_interval  # None: no check-ins
        self.checkin_next = clock.now()
        self.checkin_hold = clock.now()  # retry-after: no check-in before this
        self._checked_in: tuple[object, ...] | None = None  # what the last check-in reported

    def start(self) -> None:
        for m in self.managed:
            m.start()
        self.started = True

    def refresh_roots(self, now: datetime) -> None:
        try:
            answer = self.backend.roots(self.roots_etag)
        except CAUnavailable as exc:
            self.roots_failures += 1
            log.debug("trust bundle poll failed: %s", exc.detail)
            self.roots_next = now + min(self.config.roots_interval, Backoff().delay(self.roots_failures, self.rng))
            return
        self.roots_failures = 0
        if answer is not None:
            self.roots_etag = answer.etag
            for m in self.managed:
                if m.current is not None:  # a bootstrap writes the trust files itself
                    m.update_bundle(answer)
        self.roots_next = now + self.config.roots_interval

    # -- check-in ------------------------------------------------------------------------

    def _state(self) -> tuple[object, ...]:
        return tuple((m.serial, m.counters.roots_updates) for m in self.managed)

    def checkin_due(self, now: datetime) -> bool:
        if self.checkin_interval is None or now < self.checkin_hold:
            return False
        return now >= self.checkin_next or self._state() != self._checked_in

    def checkin(self, now: datetime) -> None:
        """Check in for every certificate and obey the answers at once; a failure is logged and
        the check-in retried at the next interval (renewals go on regardless)."""
        assert self.checkin_interval is not None
        self._checked_in = self._state()
        jitter = self.rng.uniform(-CHECKIN_JITTER, CHECKIN_JITTER)
        self.checkin_next = now + self.checkin_interval * (1 + jitter)
        refresh = False
        for m in self.managed:
            try:
                proof = m.checkin_proof(self.checkin_interval)
                if proof is None:
                    continue
                answer = self.backend.checkin(proof)
            except (errors.TrustyardError, OSError, ValueError) as exc:
                detail = exc.detail if isinstance(exc, errors.TrustyardError) else str(exc)
                log.warning("%s: check-in failed: %s; next one in %s", m.spec.name, detail,
                            humanize(self.checkin_next - now), extra={"event": "checkin_failed",
                                                                      "certificate": m.spec.name})
                continue
            for directive in answer.get("directives") or []:
                name = directive.get("name") if isinstance(directive, dict) else None
                if name == "refresh-bundle":
                    refresh = True
                elif name == "renew-now":
                    m.renew_now(now)
                elif name == "retry-after":
                    seconds = directive.get("seconds")
                    wait = timedelta(seconds=min(seconds, MAX_CHECKIN_HOLD)
                                     if isinstance(seconds, (int, float)) and seconds > 0 else 60)
                    log.info("the CA sheds load: next check-in in %s", humanize(wait),
                             extra={"event": "retry_after"})
                    self.checkin_hold = self.checkin_next = now + wait
            log.debug("%s: checked in: %s", m.spec.name, answer)
        if refresh:
            log.info("the CA says the trust bundle changed: fetching it", extra={"event": "refresh_bundle"})
            self.roots_etag = None
            self.refresh_roots(self.clock.now())

    def once(self) -> int:
        """For cron and init containers: get or renew what is due, refresh ca.crt, exit."""
        if not self.started:
            self.start()
        now = self.clock.now()
        for m in self.managed:
            if m.current is None or m.due(now) or m.pending_serial is not None:
                m.step(now)
        if self._refused():
            return EXIT_REFUSED
        self.refresh_roots(self.clock.now())
        if self.checkin_interval is not None:
            self.checkin(self.clock.now())
        if any(m.needs_bootstrap for m in self.managed):
            return EXIT_REBOOTSTRAP
        if any(m.failures or m.current is None for m in self.managed):
            return EXIT_FAILED
        return EXIT_OK

    def run(self) -> int:
        if not self.started:
            self.start()
        while True:
            wake = self.tick()
            if wake is None:
                self._stopping("the CA refused what retrying cannot fix")
                return EXIT_REFUSED
            if not self.clock.sleep((wake - self.clock.now()).total_seconds()):
                self._stopping("asked to stop")
                return EXIT_OK

    def tick(self) -> datetime | None:
        """One pass of the run loop without its sleep: the steps due, the bundle poll, the
        check-in (and a renewal it asks for, at once); when the next pass is due, or None when
        the CA refused what retrying cannot fix. The fleet benchmark drives many agents by this."""
        while True:
            now = self.clock.now()
            for m in self.managed:
                if m.due(now):
                    m.step(now)
            if self._refused():
                return None
            now = self.clock.now()
            if now >= self.roots_next:
                self.refresh_roots(now)
            if self.checkin_due(self.clock.now()):
                self.checkin(self.clock.now())
                if any(m.due(self.clock.now()) for m in self.managed):
                    continue  # renew-now: at once
                if self.checkin_due(self.clock.now()):
                    continue  # refresh-bundle changed the bundle: report it at once
            now = self.clock.now()
            wakes = [m.next_at for m in self.managed] + [self.roots_next, now + self.MAX_NAP]
            if self.checkin_interval is not None:
                wakes.append(max(self.checkin_next, self.checkin_hold))
            return min(wakes)

    def _refused(self) -> bool:
        return any(m.refusal for m in self.managed)

    def _stopping(self, why: str) -> None:
        """Say what really is in place on disk, certificate by certificate."""
        for m in self.managed:
            log.info("stopping (%s): %s", why, m.in_place())


def _version_text(bundle: TrustBundle) -> str:
    return str(bundle.version) if bundle.version is not None else "(unnumbered)"
