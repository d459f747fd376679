"""Startup validation of a certificate, its key and the trust bundle.

``validate`` runs every check and returns a :class:`CheckReport`; when one fails it
raises the first failure in this order, each a :class:`CheckFailed` subclass with its
own exit status (``trustyard check`` uses them)::

    CheckFailed (TrustyardError)      exit   what
    +-- CheckInputError                 3    a file is missing or not a certificate/key/bundle
    +-- KeyMismatch                    10    the key does not belong to the certificate
    +-- ChainInvalid                   11    no valid path from the certificate to the bundle
    +-- OutsideValidity                12    expired or not yet valid (leaf or chain)
    |   +-- NotEnoughTimeLeft          13    valid, but less time left than --min-remaining
    +-- IsCA                           14    the certificate is a CA, not a service certificate
    +-- WrongUsage                     15    EKU/key usage does not allow server (client) auth
    +-- NameMismatch                   16    the name is not among the certificate's SANs

The raised error carries the report as ``error.report`` (all failures in
``report.failures``), so a caller can log everything before refusing to start.

Chain verification uses cryptography's ``x509.verification`` where it can: that
verifier refuses Ed25519 keys and signatures and certificates without an Authority Key
Identifier, so for those chains a path is built by signatures and key identifiers and
then checked here: CA flags, keyCertSign, path length, validity and name constraints.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import TrustyardError
from .units import Threshold, humanize
from .x509 import chain as chainlib
from .x509.keys import PrivateKey, load_private_key_pem, same_public_key
from .x509.names import name_text, parse_name, sans_of
from .x509.summary import fingerprint_sha256, is_ca, load_pem_bundle, summarize

Usage = Literal["server", "client"]
CertSource = str | os.PathLike[str] | bytes | x509.Certificate | Sequence[x509.Certificate]
KeySource = str | os.PathLike[str] | bytes | PrivateKey


class CheckFailed(TrustyardError):
    status = 422
    code = "checkFailed"
    title = "Certificate check failed"
    exit_code = 1
    report: CheckReport | None = None


class CheckInputError(CheckFailed):
    code, title, exit_code = "checkInput", "Unreadable input", 3


class KeyMismatch(CheckFailed):
    code, title, exit_code = "keyMismatch", "Key does not match certificate", 10


class ChainInvalid(CheckFailed):
    code, title, exit_code = "chain", "Certificate does not chain to the trust bundle", 11


class OutsideValidity(CheckFailed):
    code, title, exit_code = "validity", "Outside the validity window", 12


class NotEnoughTimeLeft(OutsideValidity):
    code, title, exit_code = "timeLeft", "Not enough time left", 13


class IsCA(CheckFailed):
    code, title, exit_code = "isCA", "Certificate is a CA", 14


class WrongUsage(CheckFailed):
    code, title, exit_code = "usage", "Key usage does not fit", 15


class NameMismatch(CheckFailed):
    code, title, exit_code = "name", "Name not in certificate", 16


# The order failures are raised in (and exit statuses chosen by) when several apply.
ORDER: tuple[type[CheckFailed], ...] = (
    KeyMismatch, ChainInvalid, OutsideValidity, NotEnoughTimeLeft, IsCA, WrongUsage, NameMismatch,
)
CHECKS = ("key", "chain", "validity", "time_left", "ca", "usage", "name")


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
) -> CheckReport:
    """Check that ``cert`` (leaf then intermediates) with ``key`` is fit to serve now.

    Paths, PEM bytes or loaded objects are accepted. Returns the report when healthy,
    raises the first :class:`CheckFailed` (see the module doc) otherwise.
    """
    if usage not in ("server", "client"):
        raise ValueError(f"usage must be 'server' or 'client', not {usage!r}")
    now = now or datetime.now(UTC)
    threshold = _threshold(min_remaining)
    certs = _certificates(cert, "certificate")
    bundle = _certificates(ca, "trust bundle")
    private_key = _private_key(key, password)
    leaf, extra = certs[0], certs[1:]

    failures: list[CheckFailed] = []
    checks: dict[str, str] = {}

    def record(check: str, failure: CheckFailed | None, ok: str = "ok") -> None:
        checks[check] = failure.detail if failure else ok
        if failure:
            failures.append(failure)

    record("key", None if same_public_key(leaf.public_key(), private_key.public_key())  # type: ignore[arg-type]
           else KeyMismatch("the private key does not belong to the certificate (different public key)"))

    path, method, chain_failure = _verify_chain(leaf, extra, bundle, now)
    record("chain", chain_failure, ok=f"ok ({method})")

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

    record("ca", IsCA("the certificate is a CA certificate (basicConstraints CA:TRUE), "
                      "not a service certificate") if is_ca(leaf) else None)
    record("usage", _usage_problem(leaf, usage))
    if name is None:
        checks["name"] = "not checked (no --name)"
    else:
        record("name", _name_problem(leaf, name))

    report = CheckReport(
        summary=summarize(leaf, now), chain=[chainlib.label(c) for c in path], chain_method=method,
        usage=usage, name=name, now=now, remaining=remaining, required_remaining=required,
        checks=checks, failures=sorted(failures, key=lambda f: ORDER.index(type(f))),
    )
    if report.failures:
        first = report.failures[0]
        first.report = report
        raise first
    return report


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


# -- chain ----------------------------------------------------------------------------------------

def _pyca_can_verify(certs: Sequence[x509.Certificate]) -> str | None:
    """Why cryptography's verifier cannot judge this chain, or None when it can."""
    from cryptography.x509.verification import PolicyBuilder

    if not hasattr(PolicyBuilder, "extension_policies"):
        return "cryptography < 45 cannot verify a chain apart from its EKU"
    for cert in certs:
        if isinstance(cert.public_key(), ed25519.Ed25519PublicKey) or \
                cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ED25519:
            return "Ed25519"
        if cert.issuer != cert.subject and chainlib.authority_key_id(cert) is None:
            return "a certificate without an Authority Key Identifier"
    return None


def _verify_chain(leaf: x509.Certificate, extra: list[x509.Certificate], bundle: list[x509.Certificate],
                  now: datetime) -> tuple[list[x509.Certificate], str, CheckFailed | None]:
    built = chainlib.check_chain([leaf, *extra], bundle)
    path = list(built.path)
    if built.anchor is not None and all(fingerprint_sha256(built.anchor) != fingerprint_sha256(c) for c in path):
        path.append(built.anchor)
    if fingerprint_sha256(leaf) in {fingerprint_sha256(c) for c in bundle} or chainlib.is_leaf_self_signed(leaf):
        return path, "paths", ChainInvalid(
            "the certificate is self-signed: it is its own trust anchor, so every client must be handed "
            "this very certificate; issue it from the CA instead")
    if not built.trusted:
        return path, "paths", ChainInvalid(f"{built.code}: {built.detail}", reason=built.code)
    # The dates are the validity check's business: verify at a moment inside every window.
    at = min(max([now, *(c.not_valid_before_utc for c in path)]), min(c.not_valid_after_utc for c in path))
    why_not = _pyca_can_verify(path)
    if why_not is None:
        return path, "cryptography", _pyca_verify(leaf, extra, bundle, at)
    return path, f"trustyard fallback ({why_not})", _fallback_verify(path, at)


def _pyca_verify(leaf: x509.Certificate, extra: list[x509.Certificate], bundle: list[x509.Certificate],
                 at: datetime) -> CheckFailed | None:
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    # A client verifier with a permissive end-entity policy: RFC 5280 path validation and
    # the CA rules, but no opinion on the leaf's EKU or names (those are separate checks).
    builder = (PolicyBuilder().store(Store(bundle)).time(at)
               .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                   ee_policy=ExtensionPolicy.permit_all()))
    try:
        builder.build_client_verifier().verify(leaf, extra)
    except (VerificationError, ValueError) as exc:
        return ChainInvalid(f"the chain does not verify: {exc}")
    return None


def _fallback_verify(path: list[x509.Certificate], at: datetime) -> CheckFailed | None:
    """RFC 5280 rules over a path already linked by signatures (leaf first, anchor last)."""
    leaf = path[0]
    for depth, issuer in enumerate(path[1:]):
        who = chainlib.label(issuer)
        if not is_ca(issuer):
            return ChainInvalid(f"{who} signed a certificate but is not a CA (basicConstraints)")
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.key_cert_sign:
                return ChainInvalid(f"{who} may not sign certificates (keyUsage without keyCertSign)")
        except x509.ExtensionNotFound:
            pass
        path_len = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        if path_len is not None and depth > path_len:
            return ChainInvalid(f"{who} allows {path_len} intermediate(s) below it, the path has {depth}")
        problem = _name_constraints_problem(issuer, leaf)
        if problem:
            return ChainInvalid(problem)
    window = chainlib.check_validity(path, at)
    if window is not None:
        return ChainInvalid(f"the chain has no common validity window: {window.detail}")
    return None


def _name_constraints_problem(issuer: x509.Certificate, leaf: x509.Certificate) -> str | None:
    try:
        nc = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    for san in sans_of(leaf):
        kind = type(san)
        permitted = [p for p in nc.permitted_subtrees or () if type(p) is kind]
        excluded = [p for p in nc.excluded_subtrees or () if type(p) is kind]
        if any(_within(san, e) for e in excluded) or (permitted and not any(_within(san, p) for p in permitted)):
            return f"{name_text(san)} is outside the name constraints of {chainlib.label(issuer)}"
    return None


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName):
        host, base = name.value.lower().rstrip("."), str(subtree.value).lower().lstrip(".")
        return host == base or host.endswith("." + base)
    if isinstance(name, x509.IPAddress):
        return isinstance(subtree.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and \
            not isinstance(name.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and \
            name.value in subtree.value
    if isinstance(name, x509.UniformResourceIdentifier):
        host = name.value.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
        base = str(subtree.value).lower()
        return host.endswith(base) if base.startswith(".") else host == base
    return True


# -- usage and name -------------------------------------------------------------------------------

def _usage_problem(leaf: x509.Certificate, usage: Usage) -> CheckFailed | None:
    wanted = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        eku = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = None  # RFC 5280: no EKU extension means any purpose
    if eku is not None and wanted not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        have = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku) or "none"
        return WrongUsage(f"extendedKeyUsage ({have}) does not allow {usage}Auth")
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    rsa_kx = isinstance(leaf.public_key(), rsa.RSAPublicKey) and ku.key_encipherment and usage == "server"
    if not ku.digital_signature and not rsa_kx:
        return WrongUsage("keyUsage lacks digitalSignature, which TLS authentication needs")
    return None


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
