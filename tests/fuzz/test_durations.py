"""Durations as people (and attackers) write them.

``units.parse_duration`` and ``units.Threshold.parse`` return a value or raise ``ValueError``
naming the text; every caller turns that ``ValueError`` into its designed error (a 400 on the
API, ``ConfigError`` in a config file). Absurd values (``9999999999999d``,
``-5m``, ``1e9h``) are among the explicit examples (``9999999999999d`` once raised
``OverflowError``).
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from trustyard.units import MAX_DURATION, Threshold, format_duration, parse_duration

from .strategies import budget

ABSURD = ("9999999999999d", "-5m", "1e9h", "99999999999999999999999y", "1.5h", "0x10m", "\u0661\u0662h", "\uff15m",
          "+5m", "5", "h", "", " ", "5mm", "NaNh", "infd", "5m\n5m", "99999999999w")

duration_texts = st.one_of(
    st.builds(lambda sign, digits, space, unit: f"{sign}{digits}{space}{unit}",
              st.sampled_from(["", "-", "+", " "]), st.integers(0, 10**30).map(str) | st.text("0123456789.e", max_size=30),
              st.sampled_from(["", " ", "\t"]), st.sampled_from(["s", "m", "h", "d", "w", "y", "", "%", "ms", "S", "x"])),
    st.text(max_size=30),
)


def _only_value_error(call):  # type: ignore[no-untyped-def]
    try:
        return call()
    except ValueError as exc:
        assert str(exc), "a refusal must say why"
        return None


@budget(400)
@given(duration_texts)
@example("9999999999999d")
@example("-5m")
@example("1e9h")
@example("99999999999999999999999y")
def test_parse_duration_returns_a_timedelta_or_raises_value_error(text: str) -> None:
    value = _only_value_error(lambda: parse_duration(text))
    if value is not None:
        assert isinstance(value, timedelta)
        assert timedelta(0) < value <= MAX_DURATION
        assert parse_duration(format_duration(value)) == value  # what we print, we read back


@budget(300)
@given(st.one_of(duration_texts, st.builds(lambda n, t: f"{n}{t}%", st.floats(allow_nan=True).map(str) | st.integers().map(str),
                                           st.sampled_from(["", " "]))))
@example("9999999999999d")
@example("1e400%")
@example("nan%")
def test_threshold_parse_returns_a_threshold_or_raises_value_error(text: str) -> None:
    value = _only_value_error(lambda: Threshold.parse(text))
    if value is not None:
        result = value.of(timedelta(days=1))
        assert timedelta(0) <= result


@budget(50)
@given(st.sampled_from(ABSURD))
def test_the_absurd_durations_of_item_4_are_refused_with_value_error(text: str) -> None:
    try:
        parse_duration(text)
    except ValueError as exc:
        assert str(exc)
    else:
        raise AssertionError(f"{text!r} was accepted")
