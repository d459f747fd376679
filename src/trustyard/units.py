"""Durations as people write them: ``90s``, ``15m``, ``24h``, ``30d``, or ``33%`` of a lifetime.

The one parser of durations for the API, the CLI and every config file: whatever the
input (negative, overflowing, exponent notation, non-ASCII digits, absurdly long), it
returns a ``timedelta`` within ``MAX_DURATION`` or raises ``ValueError`` with a message
fit to show the user; never ``OverflowError`` or anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
# ASCII only: ``\d`` and ``\s`` would also take Arabic-Indic digits and Unicode spaces.
_DURATION = re.compile(r"[ \t]*([0-9]+)[ \t]*([smhdwy])[ \t]*")  # used with fullmatch ("$" lets "\n" through)
_PERCENT = re.compile(r"[ \t]*([0-9]{1,3}(?:\.[0-9]{1,6})?)[ \t]*%[ \t]*")
MAX_DURATION = timedelta(days=100 * 365)
"""The longest duration anything in trustyard accepts (100 years): beyond it a value is a typo."""
_MAX_DIGITS = 12  # enough for MAX_DURATION in seconds; more digits are out of range whatever the unit


def _shown(text: object) -> str:
    """The input, quoted and cut short, for an error message."""
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """``"24h"`` -> ``timedelta(hours=24)``; raises ``ValueError`` naming the bad text.

    The result is positive (or zero with ``allow_zero``) and at most ``MAX_DURATION``.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) and len(text) <= 64 else None
    if not match:
        raise ValueError(f"invalid duration {_shown(text)}: write a whole number and a unit s/m/h/d/w/y, e.g. 24h")
    digits, unit = match.groups()
    if len(digits.lstrip("0")) > _MAX_DIGITS or int(digits) * _UNITS[unit] > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {_shown(text)}: longer than the maximum of 100 years")
    seconds = int(digits) * _UNITS[unit]
    if seconds == 0 and not allow_zero:
        raise ValueError(f"invalid duration {_shown(text)}: must be more than zero")
    return timedelta(seconds=seconds)


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
        match = _PERCENT.fullmatch(text) if isinstance(text, str) else None
        if match:
            value = float(match.group(1))
            if not 0 < value <= 100:
                raise ValueError(f"invalid percentage {_shown(text)}: must be in (0, 100]")
            return cls(fraction=value / 100)
        return cls(absolute=parse_duration(text))

    def of(self, lifetime: timedelta) -> timedelta:
        if self.absolute is not None:
            return self.absolute
        assert self.fraction is not None
        return lifetime * self.fraction
