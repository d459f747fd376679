"""Durations as people write them: ``90s``, ``15m``, ``24h``, ``30d``, or ``33%`` of a lifetime."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
# ASCII digits only: ``\d`` would also read "١٢h" or "５m" as numbers.
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$", re.ASCII)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$", re.ASCII)


def parse_duration(text: str) -> timedelta:
    """``"24h"`` -> ``timedelta(hours=24)``; raises ``ValueError`` naming the bad text."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: write a number and a unit s/m/h/d/w/y, e.g. 24h")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(delta: timedelta) -> str:
    """The largest exact unit: 86400 s -> ``"1d"``, 5400 s -> ``"90m"``."""
    seconds = int(delta.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def humanize(delta: timedelta) -> str:
    """Roughly, for people: ``3d 4h``, ``-2h 5m`` when in the past."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


@dataclass(frozen=True)
class Threshold:
    """A point before expiry: an absolute duration, or a fraction of the lifetime."""

    absolute: timedelta | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Threshold":
        match = _PERCENT.match(str(text))
        if match:
            value = float(match.group(1))
            if not 0 < value <= 100:
                raise ValueError(f"invalid percentage {text!r}: must be in (0, 100]")
            return cls(fraction=value / 100)
        return cls(absolute=parse_duration(text))

    def of(self, lifetime: timedelta) -> timedelta:
        if self.absolute is not None:
            return self.absolute
        assert self.fraction is not None
        return lifetime * self.fraction
