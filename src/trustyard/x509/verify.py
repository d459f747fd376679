"""The one chain verifier: ``check``, ``doctor`` and ``scan`` all judge chains here.

``verify`` builds every path from the peer's certificate to a trust anchor (backtracking
over alternate issuers, see :func:`chain.candidate_paths`) and accepts the first path that
passes every rule; it never raises on a certificate, however malformed: the answer is a
:class:`Verification` whose problems each name a *layer* (the ones ``doctor`` reports:
trust, identity, validity) and a *code*.

The rules for one path, in the order a problem is reported:

1. RFC 5280 path validation by pyca/cryptography's ``x509.verification`` with the
   server (or client) rules for the usage, run on this exact path, plus the rules it
   leaves out (:mod:`.pathrules`); for Ed25519, which cryptography refuses, the same
   rules are checked here;
2. identity: the expected name among the SANs (cryptography's matching as a second
   opinion);
3. validity: every certificate's window at the verification time;
4. the peer certificate's profile (:mod:`.leaf`): basicConstraints, EKU for the usage
   (serverAuth for servers, clientAuth for clients), keyUsage, key strength, the CN
   among the SANs.

The rules are checked at a moment inside every window of the path, so an expired
intermediate is reported as ``expired``, not as an opaque path failure.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Literal

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from . import chain as chainlib
from .leaf import Problem, leaf_problems
from .pathrules import fallback_problem, path_problem, pyca_problem, pyca_usable
from .revocation import revocation_problem
from .summary import fingerprint_sha256

Usage = Literal["server", "client"]

# Paths tried before giving up: enough for cross-signed and renewed CAs, bounded for
# bundles built to make path building explode.
MAX_PATHS = 32

__all__ = ["ChainRejected", "Problem", "Usage", "Verification", "unparsable", "verify"]


@dataclass
class Verification:
    """What :func:`verify` found. ``ok`` when a path passed every rule."""

    path: list[x509.Certificate]  # leaf first, anchor last (the best path tried when rejected)
    problems: list[Problem] = field(default_factory=list)
    method: str = "cryptography"  # or "trustyard fallback (<why cryptography could not>)"
    needed_issuer: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def layer(self) -> str | None:
        return self.first.layer if self.first else None

    @property
    def code(self) -> str | None:
        return self.first.code if self.first else None

    @property
    def detail(self) -> str:
        return self.first.detail if self.first else ""

    def require(self) -> Verification:
        """Raise :class:`ChainRejected` unless ``ok``."""
        if self.problems:
            raise ChainRejected(self)
        return self


class ChainRejected(ValueError):
    """A refused chain, for callers that prefer an exception. Carries the verification."""

    def __init__(self, verification: Verification) -> None:
        first = verification.first
        assert first is not None
        super().__init__(f"{first.layer}/{first.code}: {first.detail}")
        self.verification = verification
        self.layer, self.code, self.detail = first.layer, first.code, first.detail


PeerName = str | x509.DNSName | x509.IPAddress


def verify(
    peer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    usage: Usage = "server",
    name: PeerName | None = None,
    at: datetime | None = None,
    max_depth: int | None = None,
    known: Sequence[x509.Certificate] = (),
    check_dates: bool = True,
    check_leaf: bool = True,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> Verification:
    """Judge ``peer`` (with the ``intermediates`` it came with) against ``anchors``.

    ``name`` is the DNS name or IP the peer must carry (None: not checked). ``known`` are
    other certificates seen elsewhere: a path that needs one of them is reported as a
    missing intermediate. ``check_dates=False`` leaves the windows to the caller (the
    rules are still checked inside them); ``check_leaf=False`` leaves the peer's profile
    to the caller (``check`` reports usage and CA flag under their own exit codes).
    ``crls`` are revocation lists the caller holds (see :mod:`.revocation`).
    Never raises on certificate content.
    """
    if usage not in ("server", "client"):
        raise ValueError(f"usage must be 'server' or 'client', not {usage!r}")
    at = at or datetime.now(UTC)
    try:
        return _verify(peer, list(intermediates), list(anchors), usage, name, at, max_depth, list(known),
                       check_dates, check_leaf, list(crls))
    except Exception as exc:
        return Verification([peer], [Problem("trust", "malformed_certificate",
                                             f"a certificate cannot be processed: {type(exc).__name__}: {exc}")],
                            method="trustyard")


def _verify(peer: x509.Certificate, intermediates: list[x509.Certificate], anchors: list[x509.Certificate],
            usage: Usage, name: PeerName | None, at: datetime, max_depth: int | None,
            known: list[x509.Certificate], check_dates: bool, check_leaf: bool,
            crls: list[x509.CertificateRevocationList]) -> Verification:
    broken = unparsable(peer)
    if broken:
        return Verification([peer], [Problem("trust", "malformed_certificate", f"the peer certificate: {broken}")],
                            method="trustyard")
    intermediates = [c for c in intermediates if not unparsable(c)]
    anchors = [c for c in anchors if not unparsable(c)]
    wanted = _peer_name(name)
    if isinstance(wanted, Problem):
        return Verification([peer], [wanted], method="trustyard")

    own = leaf_problems(peer, usage) if check_leaf else []
    depth = chainlib.MAX_DEPTH if max_depth is None else max_depth
    best: Verification | None = None
    paths = islice(chainlib.candidate_paths(peer, intermediates, anchors, max_depth=depth + 1), MAX_PATHS)
    for path in _ordered(paths, at):
        result = _judge(path, usage, wanted, at, max_depth, own, check_dates, crls)
        if result.ok:
            return result
        if best is None or _rank(result) > _rank(best):
            best = result
    if best is not None:
        return best
    return _no_path(peer, intermediates, anchors, known, own)


def unparsable(cert: x509.Certificate) -> str | None:
    """Why the parts of ``cert`` a verifier reads do not parse, or None."""
    try:
        with warnings.catch_warnings():  # legacy roots in system bundles have negative serials: not our output
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert.extensions  # noqa: B018 - parsing is the check
            cert.public_key()
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            cert.not_valid_after_utc  # noqa: B018
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _peer_name(name: PeerName | None) -> x509.DNSName | x509.IPAddress | Problem | None:
    if name is None or isinstance(name, (x509.DNSName, x509.IPAddress)):
        return name
    text = str(name).strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    try:
        return x509.DNSName(text.lower().rstrip("."))
    except ValueError as exc:
        return Problem("identity", "hostname_mismatch", f"{text!r} is not a valid name: {exc}")


def _ordered(paths: object, at: datetime) -> list[list[x509.Certificate]]:
    """Paths whose every window holds ``at`` first, then the others; shortest first."""
    found = list(paths)  # type: ignore[call-overload]
    return sorted(found, key=lambda p: (chainlib.check_validity(p, at) is not None, len(p)))


_LAYER_RANK = {"trust": 0, "identity": 1, "validity": 2}


def _rank(result: Verification) -> int:
    """Which failed path to report: the one that got furthest (a date beats a broken rule)."""
    return _LAYER_RANK.get(result.layer or "trust", 0)


def _common_time(path: Sequence[x509.Certificate], at: datetime) -> datetime:
    """``at`` if every window holds it, else the moment closest to it inside all of them."""
    start = max(c.not_valid_before_utc for c in path)
    end = min(c.not_valid_after_utc for c in path)
    return min(max(at, start), end) if start <= end else at


def _judge(path: list[x509.Certificate], usage: Usage, name: x509.DNSName | x509.IPAddress | None,
           at: datetime, max_depth: int | None, own: list[Problem], check_dates: bool,
           crls: list[x509.CertificateRevocationList]) -> Verification:
    peer = path[0]
    inside = _common_time(path, at)
    if chainlib.check_validity(path, inside) is not None:  # no moment inside every window
        window = chainlib.check_validity(path, at)
        if window is not None:
            return Verification(path, [Problem("validity", window.code, window.detail), *own], method="trustyard")
    why_not = pyca_usable(path)
    method = "cryptography" if why_not is None else f"trustyard fallback ({why_not})"
    # A name the certificate does not carry is the most telling answer, so it comes before
    # the rules that need every extension to be right (a no-SAN certificate breaks both).
    problem = path_problem(path, usage) or _identity(peer, name)
    if problem is None and why_not is None:
        problem = pyca_problem(path, usage, name, inside, max_depth)
    elif problem is None:
        problem = fallback_problem(path, usage, inside, max_depth)
    if problem is None and crls:
        problem = revocation_problem(path, crls)
    if problem is not None:
        return Verification(path, [problem], method=method)
    if check_dates:
        window = chainlib.check_validity(path, at)
        if window is not None:
            return Verification(path, [Problem("validity", window.code, window.detail), *own], method=method)
    return Verification(path, list(own), method=method)


def _identity(peer: x509.Certificate, name: x509.DNSName | x509.IPAddress | None) -> Problem | None:
    if name is None:
        return None
    text = str(name.value)
    found = chainlib.check_hostname(peer, text)
    return Problem("identity", found.code, found.detail) if found else None


def _no_path(peer: x509.Certificate, intermediates: list[x509.Certificate], anchors: list[x509.Certificate],
             known: list[x509.Certificate], own: list[Problem]) -> Verification:
    built = chainlib.check_chain([peer, *intermediates], anchors, known)
    path = list(built.path) + ([built.anchor] if built.anchor is not None and
                               fingerprint_sha256(built.anchor) not in {fingerprint_sha256(c) for c in built.path}
                               else [])
    if built.trusted:  # linked, but only beyond the depth limit or the search budget
        return Verification(path, [Problem("trust", "invalid_chain",
                                           "no path to a trust anchor within the depth limit")], method="trustyard",
                            needed_issuer=None)
    assert built.code is not None
    return Verification(path, [Problem("trust", built.code, built.detail), *own], method="trustyard",
                        needed_issuer=built.needed_issuer)
