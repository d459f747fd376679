"""The fleet the CA can see: relying parties check in, and the answer tells them what to do.

A check-in is a proof (``ca.proofs``, audience ``trustyard:checkin``, at most 2 minutes long)
signed by the key of the party's current certificate and carrying the party's ``report`` as a
claim. Authentication reads the ledger before any signature is checked, as a renewal does: a
certificate this CA did not issue (401), a revoked or expired one (403), or one superseded
longer ago than ``SUPERSEDED_GRACE`` (403) is refused, and a refused check-in changes nothing.
The party is the certificate's identity (its subject, else its first SAN) plus the instance id
the party keeps (two replicas of one service are two parties); its serial and notAfter come
from the certificate, not from what it says.

The answer carries directives, obeyed at once:

- ``refresh-bundle``: the SHA-256 of the bundle the party reports differs from the bundle the
  CA serves (``GET /v1/roots``);
- ``renew-now``: one is pending for the party (``Fleet.request_renewal``), due, and the party
  still holds the certificate it was asked to renew; or an emergency replaces the certificate
  the check-in is authenticated by (``ca.emergency``). A request is cleared only by a check-in
  authenticated by the renewal of the certificate it names: another certificate reporting the
  party's instance id (a second instance of the identity, a replayed or forged report) neither
  clears it nor receives it;
- ``retry-after N``: the CA sheds load (more than ``max_per_second`` check-ins this second in
  this worker, or the operator's flag file holds N): nothing is verified or written, the party
  waits N seconds before its next check-in.

A party not seen for ``STALE_INTERVALS`` of its own check-in interval is ``stale``.
"""

from __future__ import annotations

import fnmatch
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ..errors import BadRequest, Code, Forbidden, TrustyardError, Unauthorized
from ..store.fleet_store import CheckinRow, FleetStore, PartyRow
from ..units import format_time
from ..x509.summary import serial_text
from . import bundle, proofs

if TYPE_CHECKING:
    from .authority import Authority

__all__ = ["Answer", "Directive", "Fleet", "PartyRow", "Selector", "party_state", "spread_renewals"]

MAX_CHECKIN_PROOF_LIFETIME = timedelta(minutes=2)
SUPERSEDED_GRACE = timedelta(hours=1)  # a renewed certificate may still check in this long (a slow reload)
STALE_INTERVALS = 3
DEFAULT_RETRY_AFTER = 30
KINDS = ("agent", "service")
_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{1,64}")

Selector = Callable[[PartyRow], bool] | str | None
"""Which parties: a predicate, a glob on the identity (``*.internal``), or None for all."""


def spread_renewals(store: FleetStore, rows: list[PartyRow], now: datetime, window: timedelta,
                    rng: random.Random) -> int:
    """A ``renew-now`` for each of ``rows``, due at points spread evenly (in random order) over
    ``window`` from ``now``; how many were asked."""
    rows = list(rows)
    rng.shuffle(rows)
    step = window / len(rows) if rows else timedelta(0)
    return store.request_renewals((r.party, r.serial, now + step * i) for i, r in enumerate(rows))


def party_state(row: PartyRow, now: datetime) -> str:
    """``stale`` when not seen for ``STALE_INTERVALS`` of its check-in interval, else ``fresh``."""
    return "stale" if now - row.last_checkin > timedelta(seconds=STALE_INTERVALS * row.interval_seconds) else "fresh"


@dataclass(frozen=True)
class Directive:
    name: str  # refresh-bundle | renew-now | retry-after
    seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name} if self.seconds is None else {"name": self.name, "seconds": self.seconds}


@dataclass(frozen=True)
class Answer:
    accepted: bool
    directives: tuple[Directive, ...] = ()
    party: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "party": self.party, "directives": [d.to_json() for d in self.directives]}


class _Shedder:
    """Per worker: more than ``max_per_second`` check-ins in one second, or a number of seconds
    in the operator's flag file (read at most once a second), means ``retry-after``."""

    def __init__(self, max_per_second: int, flag_file: Path | None) -> None:
        self.max_per_second, self.flag_file = max_per_second, flag_file
        self._lock = threading.Lock()
        self._second, self._count = 0, 0
        self._flag_read_at, self._flag = -1.0, 0

    def retry_after(self) -> int | None:
        now = time.monotonic()
        flag = self._read_flag(now)
        if flag:
            return flag
        if self.max_per_second <= 0:
            return None
        with self._lock:
            second = int(now)
            if second != self._second:
                self._second, self._count = second, 0
            self._count += 1
            if self._count > self.max_per_second:
                return DEFAULT_RETRY_AFTER
        return None

    def _read_flag(self, now: float) -> int:
        if self.flag_file is None:
            return 0
        if now - self._flag_read_at >= 1.0:
            self._flag_read_at = now
            try:
                text = self.flag_file.read_text().strip()
                self._flag = max(int(text), 1) if text else DEFAULT_RETRY_AFTER
            except FileNotFoundError:
                self._flag = 0
            except (OSError, ValueError):
                self._flag = DEFAULT_RETRY_AFTER  # the operator set it, unreadably: shed anyway
        return self._flag


class Fleet:
    """Check-ins, the parties' view, and renew-now requests, on a ``FleetStore``."""

    def __init__(self, authority: Authority[Any], store: FleetStore, *, max_per_second: int = 0,
                 flag_file: Path | None = None, rng: random.Random | None = None,
                 current_sha256: Callable[[], str] | None = None) -> None:
        self.authority, self.store = authority, store
        # The SHA-256 of the bundle the CA serves now (a rotation or another replica may change it):
        # the server's (``Api`` sets it); standalone, the authority's roots as loaded.
        self.current_sha256 = current_sha256 or (lambda: bundle.digest(authority.roots_pem))
        self.shedder = _Shedder(max_per_second, flag_file)
        self.rng = rng or random.Random()
        self.listeners: list[Callable[[str], None]] = []  # told each check-in's result (metrics)

    # -- check-in ---------------------------------------------------------------------------

    def checkin(self, token: str) -> Answer:
        seconds = self.shedder.retry_after()
        if seconds is not None:
            self._tell("shed")
            return Answer(False, (Directive("retry-after", seconds),))
        try:
            answer = self._checkin(token)
        except TrustyardError as exc:
            self._tell("refused" if exc.status in (401, 403) else "invalid")
            raise
        self._tell("ok")
        return answer

    def _checkin(self, token: str) -> Answer:
        now = self.authority.clock()
        claimed = proofs.certificate_of(token)  # the ledger before the signature
        record = self.authority.honoured(claimed)
        if record.superseded_by is not None:
            child = self.authority.store.renewal_of(record.serial)
            if child is None or now - child.requested_at > SUPERSEDED_GRACE:
                raise Forbidden(f"certificate {record.serial} was renewed (by {record.superseded_by}): check in "
                                "with the current one", code=Code.SUPERSEDED)
        proof = proofs.verify(token, proofs.CHECKIN, certificate=claimed)
        if proof.claims["exp"] - proof.claims["iat"] > MAX_CHECKIN_PROOF_LIFETIME.total_seconds():
            raise Unauthorized("a check-in proof lives at most 2 minutes", code=Code.BAD_PROOF)
        row = _report_row(proof.claims.get("report"), claimed, record.subject or (record.sans or ("",))[0])
        recorded = self.store.checkin(row, proof.jti, now, renewed_from=record.renewed_from)
        directives = []
        if row.bundle_sha256 != self.current_sha256():
            directives.append(Directive("refresh-bundle"))
        # An emergency (``ca.emergency``) asks the holder of an affected certificate to renew,
        # and retires the old certificate once its replacement checks in serving.
        guard = self.authority.guard
        urgent = guard is not None and guard.on_checkin(record, row.endpoint_serial)
        if recorded.renew_due or urgent:
            directives.append(Directive("renew-now"))
        return Answer(True, tuple(directives), row.party)

    def _tell(self, result: str) -> None:
        for listener in self.listeners:
            listener(result)

    # -- for operators and the rotation work --------------------------------------------------

    def parties(self, selector: Selector = None) -> list[PartyRow]:
        rows = self.store.parties()
        if selector is None:
            return rows
        if isinstance(selector, str):
            pattern = selector.lower()
            return [r for r in rows if fnmatch.fnmatchcase(r.identity.lower(), pattern)]
        return [r for r in rows if selector(r)]

    def request_renewal(self, selector: Selector = None, window: timedelta = timedelta(0)) -> int:
        """Ask every party ``selector`` picks to renew its current certificate: a ``renew-now``
        each, due at a point spread evenly (in random order) over ``window`` from now, delivered
        at its next check-in from then on and cleared once it reports a renewed certificate.
        Returns how many parties were asked."""
        return spread_renewals(self.store, self.parties(selector), self.authority.clock(), window, self.rng)

    def view(self, stale_only: bool = False, now: datetime | None = None) -> list[dict[str, Any]]:
        """Each party as the API and ``trustyard fleet --json`` show it."""
        now = now or self.authority.clock()
        current, shown = self.current_sha256(), []
        for r in self.store.parties():
            state = party_state(r, now)
            if stale_only and state != "stale":
                continue
            shown.append({
                "party": r.party, "identity": r.identity, "instance": r.instance, "kind": r.kind, "state": state,
                "serial": r.serial, "not_after": format_time(r.not_after), "last_checkin": format_time(r.last_checkin),
                "first_seen": format_time(r.first_seen), "interval_seconds": r.interval_seconds,
                "bundle_version": r.bundle_version, "bundle_sha256": r.bundle_sha256,
                "bundle_current": r.bundle_sha256 == current, "endpoint_serial": r.endpoint_serial,
                "failures": r.failures, "last_error": r.last_error, "agent_version": r.agent_version,
                "renew_requested": format_time(r.renew_after) if r.renew_after else None,
            })
        return shown


def _report_row(report: Any, cert: x509.Certificate, identity: str) -> CheckinRow:
    """The report claim, checked field by field (a 400 naming the field)."""
    if not isinstance(report, dict):
        raise BadRequest("the check-in proof carries no report claim", code=Code.BAD_FIELD, value="report")

    def field(name: str, kind: type | tuple[type, ...], optional: bool = True) -> Any:
        value = report.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadRequest(f"report.{name}: wrong type or missing", code=Code.BAD_FIELD, value=name)
        return value

    instance = field("instance", str, optional=False)
    if not _INSTANCE.fullmatch(instance):
        raise BadRequest("report.instance: 1-64 letters, digits, '.', '_' or '-'", code=Code.BAD_FIELD,
                         value="instance")
    kind = field("kind", str, optional=False)
    if kind not in KINDS:
        raise BadRequest(f"report.kind: one of {', '.join(KINDS)}", code=Code.BAD_FIELD, value="kind")
    sha = field("bundle_sha256", str)
    if sha is not None and (len(sha) != 64 or not _HEX.fullmatch(sha)):
        raise BadRequest("report.bundle_sha256: 64 lower-case hex digits", code=Code.BAD_FIELD, value="bundle_sha256")
    version = field("bundle_version", int)
    if version is not None and not 0 <= version < 2**62:
        raise BadRequest("report.bundle_version: out of range", code=Code.BAD_FIELD, value="bundle_version")
    endpoint = field("endpoint_serial", str)
    if endpoint is not None and not _HEX.fullmatch(endpoint):
        raise BadRequest("report.endpoint_serial: lower-case hex", code=Code.BAD_FIELD, value="endpoint_serial")
    failures = field("failures", int) or 0
    interval = field("interval_seconds", (int, float)) or 60
    if not 0 < interval <= 86400:
        raise BadRequest("report.interval_seconds: 1 s to 1 day", code=Code.BAD_FIELD, value="interval_seconds")
    error = field("last_error", str)
    version_text = field("agent_version", str) or "unknown"
    identity = identity[:255]
    return CheckinRow(
        party=f"{identity}#{instance}", identity=identity, instance=instance, kind=kind,
        serial=serial_text(cert.serial_number), not_after=cert.not_valid_after_utc.astimezone(UTC),
        bundle_version=version, bundle_sha256=sha, endpoint_serial=endpoint, failures=max(0, min(failures, 2**31 - 1)),
        last_error=error[:500] if error else None, agent_version=version_text[:64],
        interval_seconds=max(1, math.ceil(interval)),
    )
