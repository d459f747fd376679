"""When to renew, how long to wait after a failure, and how worried to be. Pure: no I/O,
no clock; every function takes ``now`` and a ``random.Random`` so tests and the fleet
benchmark can replay a schedule exactly.

Renewal point. ``renew_at`` is a :class:`~trustyard.units.Threshold`: a percentage is the
share of the lifetime that has *elapsed* (``66%``: renew two thirds in), a duration is the
time *left* before expiry (``8h``: renew 8 hours before notAfter). The lifetime starts when
the certificate reached us (``issued_at``), not at notBefore, which the CA backdates by a
minute: on a 60-second certificate that minute would otherwise be half the lifetime.

Jitter spreads a fleet that was issued at the same moment: the point moves by up to
+-``jitter`` of the interval from issuance to the nominal point, uniformly.

Outage budget. To survive a CA outage of length B the first renewal attempt must happen
at least B (plus a margin for the retry that follows the outage) before notAfter; the
point moves earlier when needed. When the lifetime is too short for that, the plan says
so (``Plan.warning``) and renews as early as it reasonably can.

After an outage. Every certificate whose renewal point fell inside a CA outage renews as
soon as the CA answers again: its retries (below) are at most ``Backoff.cap`` (1 minute)
apart, uniformly jittered, so the backlog reaches the CA spread over that minute. Waiting
longer would trade the certificates' safety margin for a smoother peak; the CA protects
itself instead (503 with Retry-After when its signing queue is too deep, which the agent
honours with jitter, ``client.retry_delay``). The certificate issued after the outage then
renews early by as much as it was late (``plan(late_by=...)``), so the fleet returns to its
rhythm instead of repeating the outage's burst one lifetime later.

Retries. Capped exponential backoff with jitter, and never longer than a quarter of the
time left: as expiry approaches, attempts get closer together, so the first attempt
after an outage ends comes before the certificate expires whenever that is possible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ..units import Threshold, format_duration, format_time, humanize

DEFAULT_RENEW_AT = Threshold(fraction=0.66)
DEFAULT_JITTER = 0.10
DEFAULT_ERROR_BEFORE = Threshold(fraction=0.10)
# An outage ends at an unknown moment; the retry after it needs room. 10% of the budget.
OUTAGE_MARGIN = 0.10
# Renewing earlier than this share of the lifetime only multiplies CA load.
EARLIEST_FRACTION = 0.10
# The longest wait between retries: an overdue renewal reaches a CA that answers again within it.
RETRY_CAP = timedelta(minutes=1)


@dataclass(frozen=True)
class Plan:
    """Where in a certificate's life the renewal goes."""

    issued_at: datetime
    not_after: datetime
    nominal: datetime          # the renewal point before jitter
    earliest: datetime         # jitter range
    latest: datetime
    warning: str | None = None  # the outage budget cannot be met
    reason: str = ""            # why the nominal point is where it is, for the log

    def explain(self, point: datetime) -> str:
        """``66% of the 1d 0h lifetime, jitter -3m 10s``: the reason for ``point`` (a pick)."""
        jitter = humanize(point - self.nominal)
        jitter = jitter if jitter.startswith("-") else f"+{jitter}"
        return f"{self.reason}, jitter {jitter}" if self.reason else f"jitter {jitter}"

    def pick(self, rng: random.Random) -> datetime:
        span = (self.latest - self.earliest).total_seconds()
        return self.earliest + timedelta(seconds=rng.uniform(0, span)) if span > 0 else self.nominal


def _span(lifetime: timedelta) -> str:
    """A lifetime as issued (``24h``, ``60s``): counted from the request (and notAfter has whole
    seconds) it is off by a second or so, hence rounded to 5 s, or to the minute from 10 min."""
    step = 60 if lifetime >= timedelta(minutes=10) else 5
    return format_duration(timedelta(seconds=max(round(lifetime.total_seconds() / step), 1) * step))


@dataclass(frozen=True)
class Schedule:
    renew_at: Threshold = DEFAULT_RENEW_AT
    jitter: float = DEFAULT_JITTER
    outage_budget: timedelta | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")
        if self.outage_budget is not None and self.outage_budget < timedelta(0):
            raise ValueError("the outage budget cannot be negative")

    def plan(self, issued_at: datetime, not_after: datetime, late_by: timedelta = timedelta(0)) -> Plan:
        """The renewal window of a certificate issued at ``issued_at``. ``late_by``: how late the
        renewal that produced it came (after an outage); the window moves that much earlier,
        but not before ``EARLIEST_FRACTION`` of the lifetime."""
        lifetime = not_after - issued_at
        if lifetime <= timedelta(0):
            return Plan(issued_at, not_after, issued_at, issued_at, issued_at)
        if self.renew_at.fraction is not None:
            offset = lifetime * self.renew_at.fraction
            reason = f"{self.renew_at.fraction * 100:g}% of the {_span(lifetime)} lifetime"
        else:
            offset = lifetime - self.renew_at.of(lifetime)
            reason = f"{format_duration(self.renew_at.of(lifetime))} before the end of the {_span(lifetime)} lifetime"
        if offset < lifetime * EARLIEST_FRACTION:
            offset = lifetime * EARLIEST_FRACTION
            reason = f"{EARLIEST_FRACTION * 100:g}% of the {_span(lifetime)} lifetime (the earliest renewal point)"
        warning = None
        if self.outage_budget:
            needed = self.outage_budget * (1 + OUTAGE_MARGIN)
            deadline = lifetime - needed
            if deadline < lifetime * EARLIEST_FRACTION:
                warning = (f"a {humanize(lifetime)} certificate cannot survive a {humanize(self.outage_budget)} "
                           f"CA outage: renewing at {int(EARLIEST_FRACTION * 100)}% of its lifetime; raise the TTL "
                           "or lower --outage-budget")
                offset = lifetime * EARLIEST_FRACTION
                reason = (f"{EARLIEST_FRACTION * 100:g}% of the {_span(lifetime)} lifetime, as early as allowed: "
                          f"too short for the {humanize(self.outage_budget)} outage budget")
            elif deadline < offset:
                offset = deadline
                reason = (f"{humanize(needed)} before the end of the {_span(lifetime)} lifetime, to survive a "
                          f"{humanize(self.outage_budget)} CA outage")
        spread = offset * self.jitter
        nominal = issued_at + offset
        latest = nominal + spread
        if self.outage_budget and warning is None:
            # Jitter may move the point earlier, never past the outage deadline.
            latest = min(latest, issued_at + lifetime - self.outage_budget * (1 + OUTAGE_MARGIN))
        latest = min(latest, not_after)
        earliest = max(nominal - spread, issued_at)
        if latest < earliest:
            latest = earliest
        if late_by > timedelta(0):
            floor = issued_at + lifetime * EARLIEST_FRACTION
            nominal, earliest, latest = (max(t - late_by, floor) for t in (nominal, earliest, latest))
            reason += f", moved {humanize(late_by)} earlier because the last renewal came that late"
        return Plan(issued_at, not_after, nominal, earliest, latest, warning, reason)


@dataclass(frozen=True)
class Backoff:
    """``min(cap, base * 2**(n-1), left/4)``, then a uniform pick in its upper 90%.

    The jitter keeps a fleet that failed together (one CA outage) from retrying in
    lockstep when the CA comes back; the cap (1 minute) bounds how long after its return.
    """

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = RETRY_CAP
    floor: timedelta = timedelta(seconds=1)

    def ceiling(self, failures: int, left: timedelta | None = None) -> timedelta:
        exponent = min(max(failures, 1) - 1, 30)
        delay = min(self.cap, self.base * (2 ** exponent))
        if left is not None:
            delay = min(delay, left / 4)
        return max(delay, self.floor)

    def delay(self, failures: int, rng: random.Random, left: timedelta | None = None) -> timedelta:
        ceiling = self.ceiling(failures, left)
        return max(timedelta(seconds=rng.uniform(0.1, 1.0) * ceiling.total_seconds()), self.floor)


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Status:
    level: Level
    message: str


def assess(now: datetime, issued_at: datetime | None, not_after: datetime | None,
           failing_since: datetime | None, error_before: Threshold = DEFAULT_ERROR_BEFORE) -> Status:
    """``expires in X, renewal failing since Y``: a warning while renewal fails, an error once
    the time left drops below ``error_before`` (default 10% of the lifetime) or the
    certificate has expired."""
    if not_after is None or issued_at is None:
        return Status(Level.ERROR, "no certificate yet")
    left = not_after - now
    if left <= timedelta(0):
        return Status(Level.ERROR, f"expired {humanize(-left)} ago")
    text = f"expires in {humanize(left)}"
    if failing_since is None:
        return Status(Level.OK, text)
    text += f", renewal failing since {format_time(failing_since)}"
    if left < error_before.of(not_after - issued_at):
        return Status(Level.ERROR, text)
    return Status(Level.WARNING, text)


__all__ = ["RETRY_CAP", "Backoff", "Level", "Plan", "Schedule", "Status", "assess"]
