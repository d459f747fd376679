"""Startup validation of a certificate, its key and the trust bundle.

``validate`` runs every check and returns a :class:`CheckReport`; when one fails it
raises the first failure in this order, each a :class:`CheckFailed` subclass with its
own exit status (``trustyard check`` uses them)::

    CheckFailed (TrustyardError)      exit   what
    +-- CheckInputError                 9    a file is missing or not a certificate/key/bundle
    +-- Revoked                        17    the CA's ledger says the certificate is revoked
    +-- KeyMismatch                    10    the key does not belong to the certificate
    +-- ChainInvalid                   11    no valid path from the certificate to the bundle
    +-- OutsideValidity                12    expired or not yet valid (leaf or chain)
    |   +-- NotEnoughTimeLeft          13    valid, but less time left than --min-remaining
    +-- IsCA                           14    the certificate is a CA, not a service certificate
    +-- WrongUsage                     15    EKU/key usage does not allow server (client) auth
    +-- NameMismatch                   16    the name is not among the certificate's SANs
    +-- StatusUnknown                  18    asked (``ledger=``), the CA could not say

The raised error carries the report as ``error.report`` (all failures in
``report.failures``), so a caller can log everything before refusing to start.

With ``ledger`` (a function from a serial to the CA's status document, which ``trustyard check
--ca-url`` wires to ``GET /v1/certificates/{serial}``) the CA is asked too: a revoked certificate
fails; a superseded one (already renewed) is only a warning in ``report.warnings``: it still
works until it expires, but it can no longer be renewed.

The chain is judged by the one verifier, ``trustyard.x509.verify`` (also used by
``doctor`` and ``scan``), with the server rules for ``usage="server"`` and the client
rules for ``usage="client"``; the leaf's profile (CA flag, EKU/keyUsage, CN among the
SANs) comes from the same module and is reported under its own exit code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from .environments import Environments
from .errors import Code, ExitCode, TrustyardError
from .units import Threshold, format_time, humanize
from .x509 import chain as chainlib
from .x509.keys import PrivateKey, load_private_key_pem, same_public_key
from .x509.leaf import leaf_problems
from .x509.names import name_text, parse_name, sans_of
from .x509.summary import fingerprint_sha256, load_pem_bundle, serial_text, summarize
from .x509.verify import unparsable, verify

Usage = Literal["server", "client"]
CertSource = str | os.PathLike[str] | bytes | x509.Certificate | Sequence[x509.Certificate]
KeySource = str | os.PathLike[str] | bytes | PrivateKey


class CheckFailed(TrustyardError):
    status = 422
    code = Code.CHECK_FAILED
    title = "Certificate check failed"
    exit_code = ExitCode.FAILED
    report: CheckReport | None = None


class CheckInputError(CheckFailed):
    code, title, exit_code = Code.CHECK_INPUT, "Unreadable input", ExitCode.CHECK_INPUT


class KeyMismatch(CheckFailed):
    code, title, exit_code = Code.KEY_MISMATCH, "Key does not match certificate", ExitCode.KEY_MISMATCH


class ChainInvalid(CheckFailed):
    code, title, exit_code = Code.CHAIN, "Certificate does not chain to the trust bundle", ExitCode.CHAIN


class OutsideValidity(CheckFailed):
    code, title, exit_code = Code.VALIDITY, "Outside the validity window", ExitCode.VALIDITY


class NotEnoughTimeLeft(OutsideValidity):
    code, title, exit_code = Code.TIME_LEFT, "Not enough time left", ExitCode.TIME_LEFT


class IsCA(CheckFailed):
    code, title, exit_code = Code.IS_CA, "Certificate is a CA", ExitCode.IS_CA


class WrongUsage(CheckFailed):
    code, title, exit_code = Code.USAGE, "Key usage does not fit", ExitCode.WRONG_USAGE


class NameMismatch(CheckFailed):
    code, title, exit_code = Code.NAME, "Name not in certificate", ExitCode.NAME_MISMATCH


class Revoked(CheckFailed):
    code, title, exit_code = Code.REVOKED, "Revoked by the CA", ExitCode.REVOKED


class StatusUnknown(CheckFailed):
    code, title, exit_code = Code.STATUS_UNKNOWN, "The CA could not give the status", ExitCode.STATUS_UNKNOWN


Ledger = Callable[[str], Mapping[str, Any]]
"""serial (hex) -> the CA's status document (``status``, ``revoked_at``, ``revocation_reason``,
``superseded_by``, ``fingerprint_sha256``); raises a ``TrustyardError`` when it cannot answer."""


# The order failures are raised in (and exit statuses chosen by) when several apply.
ORDER: tuple[type[CheckFailed], ...] = (
    Revoked, KeyMismatch, ChainInvalid, OutsideValidity, NotEnoughTimeLeft, IsCA, WrongUsage, NameMismatch,
    StatusUnknown,
)
CHECKS = ("key", "chain", "validity", "time_left", "ca", "usage", "name", "ledger")


@dataclass
class CheckReport:
    summary: dict[str, Any]
    chain: list[str]
    chain_method: str
    usage: Usage
    name: str | None
    now: datetime
    remaining: timedelta
    required_remaining: timedelta | None
    checks: dict[str, str] = field(default_factory=dict)
    failures: list[CheckFailed] = field(default_factory=list)
    warnings: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # the names of the checks that failed, in CHECKS order

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            **self.summary,
            "time_left": humanize(self.remaining),
            "required_remaining": humanize(self.required_remaining) if self.required_remaining is not None else None,
            "usage": self.usage,
            "name": self.name,
            "chain": self.chain,
            "chain_method": self.chain_method,
            "checks": self.checks,
            "failures": [{"class": f.code, "exit_code": f.exit_code, "detail": f.detail} for f in self.failures],
            "warnings": self.warnings,
        }


def validate(
    cert: CertSource,
    key: KeySource,
    ca: CertSource,
    name: str | None = None,
    min_remaining: Threshold | timedelta | str | None = None,
    usage: Usage = "server",
    now: datetime | None = None,
    password: bytes | None = None,
    ledger: Ledger | None = None,
    environments: Environments | None = None,
) -> CheckReport:
    """Check that ``cert`` (leaf then intermediates) with ``key`` is fit to serve now.

    Paths, PEM bytes or loaded objects are accepted. Returns the report when healthy,
    raises the first :class:`CheckFailed` (see the module doc) otherwise. With ``environments``
    a chain that leads to another environment's root fails as ``wrong_environment`` (naming both).
    """
    if usage not in ("server", "client"):
        raise ValueError(f"usage must be 'server' or 'client', not {usage!r}")
    now = now or datetime.now(UTC)
    threshold = _threshold(min_remaining)
    certs = _certificates(cert, "certificate")
    bundle = _certificates(ca, "trust bundle")
    private_key = _private_key(key, password)
    leaf, extra = certs[0], certs[1:]
    for i, cert in enumerate(certs):
        broken = unparsable(cert)
        if broken:
            raise ChainInvalid(f"malformed_certificate: {'the certificate' if i == 0 else f'chain[{i}]'} "
                               f"cannot be processed: {broken}", reason="malformed_certificate")

    failures: list[CheckFailed] = []
    failed: list[str] = []
    checks: dict[str, str] = {}

    def record(check: str, failure: CheckFailed | None, ok: str = "ok") -> None:
        checks[check] = failure.detail if failure else ok
        if failure:
            failures.append(failure)
            failed.append(check)

    record("key", None if same_public_key(leaf.public_key(), private_key.public_key())  # type: ignore[arg-type]
           else KeyMismatch("the private key does not belong to the certificate (different public key)"))

    path, method, chain_failure = _verify_chain(leaf, extra, bundle, now, usage)
    other = environments.lead_to(certs, at_hand=bundle) if environments and chain_failure else None
    if other is not None:
        assert environments is not None
        chain_failure = ChainInvalid(f"wrong_environment: {environments.explain(other)}", reason="wrong_environment",
                                     environment=environments.current, chain_environment=other)
    leaf_failures = _leaf_failures(leaf, usage)
    record("chain", chain_failure or leaf_failures.get("chain"), ok=f"ok ({method})")

    window = chainlib.check_validity(path, now)
    record("validity", OutsideValidity(window.detail) if window else None)

    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    remaining = leaf.not_valid_after_utc - now
    required = threshold.of(lifetime) if threshold else None
    if required is None:
        checks["time_left"] = "not checked (no --min-remaining)"
    elif window is None and remaining < required:
        record("time_left", NotEnoughTimeLeft(
            f"{humanize(remaining)} left, at least {humanize(required)} required", required_seconds=int(
                required.total_seconds()), seconds_left=int(remaining.total_seconds())))
    else:
        record("time_left", None, ok=f"ok ({humanize(remaining)} >= {humanize(required)})")

    record("ca", leaf_failures.get("ca"))
    record("usage", leaf_failures.get("usage"))
    if name is None and "name" not in leaf_failures:
        checks["name"] = "not checked (no --name)"
    else:
        record("name", leaf_failures.get("name") or (_name_problem(leaf, name) if name is not None else None))

    warnings: dict[str, str] = {}
    if ledger is None:
        checks["ledger"] = "not checked (no --ca-url)"
    else:
        failure, note = _ledger_status(leaf, ledger, now)
        record("ledger", failure, ok=note or "ok (issued, not revoked)")
        if note:
            warnings["ledger"] = note

    report = CheckReport(
        summary=summarize(leaf, now), chain=[chainlib.label(c) for c in path], chain_method=method,
        usage=usage, name=name, now=now, remaining=remaining, required_remaining=required,
        checks=checks, failures=sorted(failures, key=lambda f: ORDER.index(type(f))), warnings=warnings,
        failed=failed,
    )
    if report.failures:
        first = report.failures[0]
        first.report = report
        raise first
    return report


def _ledger_status(leaf: x509.Certificate, ledger: Ledger, now: datetime) -> tuple[CheckFailed | None, str | None]:
    """What the CA says of ``leaf``: a failure (revoked, or no answer), or a warning (superseded)."""
    serial = serial_text(leaf.serial_number)
    try:
        doc = ledger(serial)
    except TrustyardError as exc:
        return StatusUnknown(f"the CA could not say whether {serial} is revoked: {exc.detail}"), None
    fingerprint = doc.get("fingerprint_sha256")
    if fingerprint and fingerprint != fingerprint_sha256(leaf):
        return StatusUnknown(f"the CA's certificate {serial} is not this one (another CA at that URL?)"), None
    if doc.get("status") == "revoked":
        reason = doc.get("revocation_reason") or "unspecified"
        return Revoked(f"revoked at {format_time(str(doc.get('revoked_at')))} ({reason}): issue a new certificate",
                       reason=reason), None
    if doc.get("status") != "issued":
        return StatusUnknown(f"the CA's ledger says {serial} is {doc.get('status')}"), None
    if doc.get("superseded_by"):
        left = humanize(leaf.not_valid_after_utc - now)
        return None, (f"superseded: already renewed by {doc['superseded_by']}; this one works for {left} more "
                      "but cannot be renewed again: use the newer certificate")
    return None, None


# -- inputs ---------------------------------------------------------------------------------------

def _threshold(value: Threshold | timedelta | str | None) -> Threshold | None:
    if value is None or isinstance(value, Threshold):
        return value
    if isinstance(value, timedelta):
        return Threshold(absolute=value)
    try:
        return Threshold.parse(value)
    except ValueError as exc:
        raise CheckInputError(str(exc)) from None


def _read(source: str | os.PathLike[str] | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, what
    try:
        return Path(source).read_bytes(), str(source)
    except OSError as exc:
        raise CheckInputError(f"cannot read the {what} {source}: {exc.strerror}") from None


def _certificates(source: CertSource, what: str) -> list[x509.Certificate]:
    if isinstance(source, x509.Certificate):
        return [source]
    if isinstance(source, (list, tuple)):
        certs = list(source)
    else:
        data, where = _read(source, what)  # type: ignore[arg-type]
        try:
            certs = load_pem_bundle(data)
        except ValueError:
            try:
                certs = [x509.load_der_x509_certificate(data)]
            except ValueError:
                raise CheckInputError(f"the {what} {where} holds no PEM or DER certificate") from None
    if not certs:
        raise CheckInputError(f"the {what} is empty")
    return certs


def _private_key(source: KeySource, password: bytes | None) -> PrivateKey:
    if not isinstance(source, (str, os.PathLike, bytes)):
        return source
    data, where = _read(source, "key")
    try:
        return load_private_key_pem(data, password)
    except ValueError as exc:
        raise CheckInputError(f"the key {where}: {exc}") from None


# -- chain ---------------------------------------------------------------------------------------

def _verify_chain(leaf: x509.Certificate, extra: list[x509.Certificate], bundle: list[x509.Certificate],
                  now: datetime, usage: Usage) -> tuple[list[x509.Certificate], str, CheckFailed | None]:
    """The one verifier (``x509.verify``) with the rules for ``usage``; the dates and the
    leaf's own profile are reported by the checks below, under their own exit codes."""
    if fingerprint_sha256(leaf) in {fingerprint_sha256(c) for c in bundle} or chainlib.is_leaf_self_signed(leaf):
        built = chainlib.check_chain([leaf, *extra], bundle)
        return [*built.path], "paths", ChainInvalid(
            "the certificate is self-signed: it is its own trust anchor, so every client must be handed "
            "this very certificate; issue it from the CA instead")
    result = verify(leaf, extra, bundle, usage=usage, at=now, check_dates=False, check_leaf=False)
    if result.ok:
        return result.path, result.method, None
    return result.path, result.method, ChainInvalid(f"{result.code}: {result.detail}", reason=result.code)


# -- usage and name -------------------------------------------------------------------------------

_LEAF_CLASSES: dict[str, type[CheckFailed]] = {"leaf_is_ca": IsCA, "wrong_usage": WrongUsage,
                                               "cn_not_in_san": NameMismatch}


def _leaf_failures(leaf: x509.Certificate, usage: Usage) -> dict[str, CheckFailed]:
    """The verifier's profile rules for the leaf, keyed by the check that reports them."""
    found: dict[str, CheckFailed] = {}
    for problem in leaf_problems(leaf, usage):
        cls = _LEAF_CLASSES.get(problem.code, ChainInvalid)
        key = {IsCA: "ca", WrongUsage: "usage", NameMismatch: "name"}.get(cls, "chain")
        found.setdefault(key, cls(problem.detail, reason=problem.code))
    return found


def _name_problem(leaf: x509.Certificate, name: str) -> CheckFailed | None:
    try:
        wanted = parse_name(name)
    except ValueError as exc:
        raise CheckInputError(f"--name: {exc}") from None
    if isinstance(wanted, x509.UniformResourceIdentifier):
        uris = [n.value for n in sans_of(leaf) if isinstance(n, x509.UniformResourceIdentifier)]
        if wanted.value in uris:
            return None
        return NameMismatch(f"{wanted.value} is not a URI SAN of the certificate "
                            f"(URIs: {', '.join(uris) or 'none'})")
    problem = chainlib.check_hostname(leaf, name_text(wanted))
    return NameMismatch(problem.detail, reason=problem.code) if problem else None
