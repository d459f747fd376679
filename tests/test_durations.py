"""Every duration, wherever it is parsed (the units parser, CLI options,
trustyard.toml, the agent's config), is either a sane timedelta or a clear refusal that names
the field; never an OverflowError, never a 500. The API side is in test_api.py."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from trustyard.agent.config import cert_spec
from trustyard.ca.config import load_config
from trustyard.cli import cli, main
from trustyard.errors import ConfigError
from trustyard.units import MAX_DURATION, Threshold, parse_duration

ABSURD = ["9999999999999d", "-5m", "1e9h", "0s", "\u0661\u0662h", "\uff11\uff12h", "99999999999999999999999999999s",
          "36501d", "101y", "24h\n", "1.5h", "", "h", "12", "5 minutes", "0x10s", "1_000s", "+5m", "5\u00a0m",
          "9" * 5000 + "s"]


@pytest.mark.parametrize("text", ABSURD)
def test_absurd_durations_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1e2%", "\u0661\u0662%", "0%", "101%", "1e400%", "nan%", "33%\n"])
def test_absurd_thresholds_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Threshold.parse(text)


def test_sane_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(" 24h ") == timedelta(hours=24)
    assert parse_duration("100y") == MAX_DURATION
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    assert Threshold.parse("33%").fraction == 0.33


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"-?[0-9]{1,30}[smhdwy]", fullmatch=True)))
def test_parse_duration_returns_a_bounded_timedelta_or_a_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) < value <= MAX_DURATION


# -- CLI options: click's usage error, naming the option, exit 2 --------------------------------------

CLI_CASES = [
    (["token", "x.internal", "--ttl"], "--ttl"),
    (["token", "x.internal", "--cert-ttl"], "--cert-ttl"),
    (["init", "--root-ttl"], "--root-ttl"),
    (["init", "--intermediate-ttl"], "--intermediate-ttl"),
    (["issue", "x.internal", "--ttl"], "--ttl"),
    (["doctor", "127.0.0.1:1", "--timeout"], "--timeout"),
    (["scan", ".", "--max-validity"], "--max-validity"),
    (["scan", ".", "--timeout"], "--timeout"),
    (["scan", ".", "--warn"], "--warn"),
    (["agent", "--name", "a.internal", "--out", "o", "--ttl"], "--ttl"),
    (["agent", "--name", "a.internal", "--out", "o", "--renew-at"], "--renew-at"),
    (["agent", "--name", "a.internal", "--out", "o", "--outage-budget"], "--outage-budget"),
    (["agent", "--name", "a.internal", "--out", "o", "--error-before"], "--error-before"),
    (["agent", "--name", "a.internal", "--out", "o", "--verify-grace"], "--verify-grace"),
    (["agent", "--name", "a.internal", "--out", "o", "--roots-interval"], "--roots-interval"),
    (["check", "--cert", "c", "--key", "k", "--ca", "a", "--min-remaining"], "--min-remaining"),
]


@pytest.mark.parametrize("args,option", CLI_CASES, ids=[" ".join([*a[:1], o]) for a, o in CLI_CASES])
@pytest.mark.parametrize("value", ["9999999999999d", "-5m", "1e9h", "0s", "\u0661\u0662h",
                                   "99999999999999999999999999999s"])
def test_cli_duration_options_are_usage_errors(tmp_path: Path, args: list[str], option: str, value: str) -> None:
    result = CliRunner().invoke(cli, [*args, value, "--home", str(tmp_path)] if args[0] in ("token", "init")
                                else [*args, value])
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"Invalid value for '{option}'" in result.output and "invalid duration" in result.output
    assert not isinstance(result.exception, OverflowError)
    assert not list(tmp_path.iterdir())  # init created nothing


# -- trustyard.toml: ConfigError naming the key ----------------------------------------------------------

def _with(home: Path, section: str, key: str, value: object) -> None:
    path = home / "trustyard.toml"
    doc = tomllib.loads(path.read_text())
    if section == "provisioners":
        doc["provisioners"][0][key] = value
    else:
        doc[section][key] = value
    path.write_text(tomli_w.dumps(doc))


@pytest.mark.parametrize("section,key", [("provisioners", "max_ttl"), ("provisioners", "min_ttl"),
                                         ("provisioners", "default_ttl"), ("ca", "backdate")])
@pytest.mark.parametrize("value", ["9999999999999d", "-5m", "1e9h", "\u0661\u0662h", 86400])
def test_config_durations_name_the_key(sqlite_home: Path, capsys: pytest.CaptureFixture[str], section: str,
                                       key: str, value: object) -> None:
    _with(sqlite_home, section, key, value)
    with pytest.raises(ConfigError) as info:
        load_config(sqlite_home)
    # A number where a duration belongs is refused by the config's type check, naming the key too.
    why = "must be a string" if isinstance(value, int) else "invalid duration"
    assert key in info.value.detail and why in info.value.detail
    # the CLI: one line, exit 2
    assert main(["token", "a.internal", "--home", str(sqlite_home)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err


def test_config_zero_backdate_is_fine_but_zero_ttl_is_not(sqlite_home: Path) -> None:
    _with(sqlite_home, "ca", "backdate", "0s")
    load_config(sqlite_home)
    _with(sqlite_home, "provisioners", "min_ttl", "0s")
    with pytest.raises(ConfigError, match="min_ttl"):
        load_config(sqlite_home)


def test_config_ttl_bounds_must_be_ordered(sqlite_home: Path) -> None:
    _with(sqlite_home, "provisioners", "max_ttl", "1h")
    with pytest.raises(ConfigError, match="min_ttl <= default_ttl <= max_ttl"):
        load_config(sqlite_home)


@pytest.mark.parametrize("key", ["ttl", "renew_at", "outage_budget", "error_before", "verify_grace"])
def test_agent_config_durations_name_the_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}: invalid duration"):
        cert_spec({"name": "a.internal", "out": str(tmp_path), key: "9999999999999d"})


@pytest.mark.parametrize("key", ["root_ttl", "intermediate_ttl"])
def test_init_options_name_the_duration(tmp_path: Path, key: str) -> None:
    from trustyard.ca.home import InitOptions, init_home

    with pytest.raises(ConfigError, match=f"{key}: invalid duration"):
        init_home(tmp_path / "ca", None, InitOptions(**{key: "9999999999999d"}))
    assert not (tmp_path / "ca").exists()
