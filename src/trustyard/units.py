"""Durations and times as people read and write them.

Durations: ``90s``, ``15m``, ``24h``, ``30d``, compound ``1h30m``, ``4m55s``, ``1d12h``, or
``33%`` of a lifetime. The grammar (``DURATION_GRAMMAR``): one or more groups of ASCII digits
and a unit, units from the largest to the smallest, each at most once, no spaces between
groups (``1h30m``, not ``1h 30m`` or ``30m1h``); units ``y`` (365 days), ``w``, ``d``, ``h``,
``m`` (minutes), ``s``. This is the one parser of durations for the API, the CLI and every
config file: whatever the input (negative, overflowing, exponent notation, non-ASCII digits,
absurdly long), it returns a ``timedelta`` within ``MAX_DURATION`` or raises ``ValueError``
with a message fit to show the user; never ``OverflowError`` or anything else.

Times: every timestamp a person reads (text and JSON) is ``format_time``'s RFC 3339 UTC
with seconds and ``Z``, e.g. ``2026-12-07T16:35:28Z``; relative columns use ``humanize``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}  # largest first
_ORDER = list(_UNITS)
# ASCII only: ``\d`` and ``\s`` would also take Arabic-Indic digits and Unicode spaces.
# Used with fullmatch ("$" lets "\n" through). One group may have a space before its unit
# (``24 h``, as before); a compound one may not (``1h30m``).
_DURATION = re.compile(r"[ \t]*(?:(?P<one>[0-9]+[ \t]*[ywdhms])|(?P<many>(?:[0-9]+[ywdhms]){2,}))[ \t]*")
_GROUP = re.compile(r"([0-9]+)[ \t]*([ywdhms])")
DURATION_GRAMMAR = ("whole numbers with units, largest first, e.g. 90s, 15m, 1h30m, 4m55s, 2160h, 30d "
                    "(units y w d h m s; at most 100y)")
"""How a duration is written, for help texts and error messages."""
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
        squeezed = re.sub(r"[ \t]+", "", text) if isinstance(text, str) and len(text) <= 64 else ""
        hint = f"write it without spaces, {squeezed}" if _DURATION.fullmatch(squeezed) else f"write {DURATION_GRAMMAR}"
        raise ValueError(f"invalid duration {_shown(text)}: {hint}")
    groups = _GROUP.findall(match.group("one") or match.group("many"))
    ranks = [_ORDER.index(unit) for _, unit in groups]
    if any(a >= b for a, b in itertools.pairwise(ranks)):
        raise ValueError(f"invalid duration {_shown(text)}: write the units from the largest to the smallest, "
                         "each once (y w d h m s), e.g. 1h30m")
    if any(len(digits.lstrip("0")) > _MAX_DIGITS for digits, _ in groups):
        raise ValueError(f"invalid duration {_shown(text)}: longer than the maximum of 100 years")
    seconds = sum(int(digits) * _UNITS[unit] for digits, unit in groups)
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {_shown(text)}: longer than the maximum of 100 years")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"invalid duration {_shown(text)}: must be more than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Exact, in the grammar ``parse_duration`` reads back: 86400 s -> ``"1d"``, 5400 s ->
    ``"1h30m"``, 295 s -> ``"4m55s"``, 90 days -> ``"90d"`` (days are the largest unit shown)."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


def format_time(when: datetime | str) -> str:
    """RFC 3339 in UTC with seconds and ``Z``: ``2026-12-07T16:35:28Z``. The one format of every
    timestamp a person reads. A naive datetime is taken as UTC; a string is parsed as ISO 8601
    first (and returned unchanged when it is not one)."""
    if isinstance(when, str):
        text = when
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    w = when.astimezone(UTC)
    return f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:{w.second:02d}Z"


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
    def parse(cls, text: str) -> Threshold:
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
