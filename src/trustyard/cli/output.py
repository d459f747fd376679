"""How the CLI shows results and errors: one JSON document with --json, else text;
errors as one line on stderr and an exit status the error class owns."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import click

from ..errors import ConfigError, ExitCode, TrustyardError
from ..units import DURATION_GRAMMAR, Threshold, parse_duration


def run(cli: click.Group, argv: list[str]) -> int:
    try:
        rv = cli.main(args=argv, prog_name="trustyard", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return ExitCode.ABORTED
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE
    except ConfigError as exc:  # local: flags, files, configuration; no HTTP-style code
        click.echo(f"trustyard: error: {scrub(exc.detail)}", err=True)
        return ExitCode.USAGE
    except TrustyardError as exc:
        code = f" [{exc.code}]" if exc.code_shown else ""
        click.echo(f"trustyard: error{code}: {scrub(exc.detail)}", err=True)
        return getattr(exc, "exit_code", ExitCode.FAILED)  # a class may name its own (RotationRefused)
    except OSError as exc:  # a local file that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"trustyard: error: {where}{exc.strerror or scrub(str(exc))}", err=True)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.ABORTED
    return rv if isinstance(rv, int) else ExitCode.OK


def scrub(text: str) -> str:
    """No library internals in what a person reads (``_ssl.c`` lines, errno numbers)."""
    from ..client import scrub as clean  # imported on the error path only: keeps --help fast

    return clean(text)


def emit(as_json: bool, document: Any, text: Callable[[], str] | str) -> None:
    """Print the JSON document or the text rendering (a callable so it is built only when used)."""
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))
    else:
        click.echo(text() if callable(text) else text)


def table(rows: list[tuple[str, ...]]) -> str:
    """Columns aligned on the widest cell, two spaces apart (kubectl-style); the last one not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in rows)


def utc_log_formatter(fmt: str) -> logging.Formatter:
    """A log formatter whose ``%(asctime)s`` is ``units.format_time``'s form (UTC, seconds, ``Z``),
    whatever the machine's time zone."""
    formatter = logging.Formatter(fmt, "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


class DurationText(click.ParamType):
    """A duration option (``24h``; with ``threshold`` also ``33%``), checked by ``trustyard.units``
    so a bad one is a usage error naming the option; the command gets the text unchanged."""

    def __init__(self, threshold: bool = False) -> None:
        self.threshold = threshold
        self.name = "DURATION|PERCENT" if threshold else "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            Threshold.parse(value) if self.threshold else parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


DURATION = DurationText()
THRESHOLD = DurationText(threshold=True)
_GRAMMAR_MARK = "DURATION is written as"


def _takes(command: click.Command, kind: str) -> bool:
    return any(kind in (p.metavar or getattr(p.type, "name", "") or "").upper() for p in command.params)


def with_duration_grammar(command: click.Command) -> click.Command:
    """Append the duration grammar to the help of a command that takes a DURATION (once)."""
    for sub in getattr(command, "commands", {}).values():
        with_duration_grammar(sub)
    if _takes(command, "DURATION") and _GRAMMAR_MARK not in (command.epilog or ""):
        note = f"{_GRAMMAR_MARK} {DURATION_GRAMMAR}."
        if _takes(command, "PERCENT"):
            note += " PERCENT: a share of the certificate's lifetime, e.g. 33%."
        command.epilog = f"{command.epilog}\n\n{note}" if command.epilog else note
    return command

home_option = click.option(
    "--home", type=click.Path(file_okay=False), default=None, envvar="TRUSTYARD_HOME", show_envvar=True,
    help="CA home directory [default: ~/.trustyard].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
password_file_option = click.option(
    "--password-file", type=click.Path(dir_okay=False), default=None,
    help="File holding the CA key password (else $TRUSTYARD_PASSWORD).")


environments_option = click.option(
    "--environments", "environments_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="TOML naming this machine's environment and other environments' roots (environment = \"prod\", "
         "[environments] staging = [\"sha256:...\"]), on top of client.toml's: a chain leading to one of them "
         "is reported as wrong_environment.")
