"""``trustyard check``: refuse to start a service with a certificate that will not work."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import click

from .. import check as checklib
from ..client import CAClient
from ..clientconfig import load_environments
from ..errors import ConfigError
from ..units import Threshold
from .output import emit, environments_option, json_option

_CLASSES: tuple[type[checklib.CheckFailed], ...] = (checklib.CheckInputError, *checklib.ORDER)
_CODES = "\n".join(f"  {cls.exit_code:>2}  {cls.__name__}: {cls.title}" for cls in _CLASSES)


class _ThresholdType(click.ParamType):
    name = "DURATION|PERCENT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Threshold:
        if isinstance(value, Threshold):
            return value
        try:
            return Threshold.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


EPILOG = f"""\b
Exit status (when several checks fail, the first in this list wins):
   0  healthy (warnings, such as a superseded certificate, do not fail the check)
   2  bad flags
{_CODES}

\b
With --ca-url the CA is asked too (GET /v1/certificates/SERIAL): a revoked certificate
fails (exit 17); a superseded one (renewed already) is a WARN line, exit 0: it works until
it expires but cannot be renewed again; no answer from the CA fails (exit 18).

\b
A chain that leads to another environment's root (listed in client.toml's [environments]
or --environments FILE) fails as wrong_environment (exit 11), naming both environments.

\b
Start a service only with a healthy certificate (DIR holds tls.crt, tls.key, ca.crt,
as `trustyard issue --out DIR` and the agent write them):
  trustyard check /etc/orders/tls --name orders.internal --min-remaining 33% \\
      --ca-url https://ca.internal:8443 && exec orders-server
"""

FILES = {"cert": "tls.crt", "key": "tls.key", "ca": "ca.crt"}


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.argument("directory", metavar="[DIR]", required=False, type=click.Path(file_okay=False))
@click.option("--cert", "cert_path", default=None, type=click.Path(dir_okay=False),
              help="Certificate file: the leaf, then intermediates (PEM) [default: DIR/tls.crt].")
@click.option("--key", "key_path", default=None, type=click.Path(dir_okay=False),
              help="Its private key (PEM) [default: DIR/tls.key].")
@click.option("--ca", "ca_path", default=None, type=click.Path(dir_okay=False),
              help="Trust bundle the chain must lead to (PEM) [default: DIR/ca.crt].")
@click.option("--name", default=None, help="DNS name, IP or URI (spiffe://...) the certificate must carry.")
@click.option("--min-remaining", type=_ThresholdType(), default=None,
              help="Time that must be left: a duration (12h) or a share of the lifetime (33%).")
@click.option("--usage", type=click.Choice(["server", "client"]), default="server", show_default=True,
              help="What the certificate is for: its EKU must allow it.")
@click.option("--ca-url", default=None, help="Also ask this CA whether the certificate is revoked or superseded.")
@click.option("--root", type=click.Path(dir_okay=False), default=None,
              help="Trust bundle to verify the CA server with, for --ca-url [default: the --ca bundle].")
@environments_option
@json_option
@click.pass_context
def check(ctx: click.Context, directory: str | None, cert_path: str | None, key_path: str | None,
          ca_path: str | None, name: str | None, min_remaining: Threshold | None, usage: str, ca_url: str | None,
          root: str | None, environments_file: str | None, as_json: bool) -> None:
    """Validate a certificate, its key and trust bundle before a service starts.

    Reads DIR/tls.crt, DIR/tls.key and DIR/ca.crt (--cert, --key and --ca override each one).
    Checks that the key matches, the chain leads to the bundle, the certificate is inside
    its validity window with enough time left, is not a CA, has an EKU fitting --usage and
    carries --name; with --ca-url, that the CA has not revoked it. Prints subject, issuer,
    SANs, serial, dates and time left, then one line per check; failing lines start with FAIL.
    """
    paths = {"cert": cert_path, "key": key_path, "ca": ca_path}
    for what, path in paths.items():
        if path is None:
            if directory is None:
                raise click.UsageError(f"give DIR (holding {', '.join(FILES.values())}) or --cert, --key and --ca")
            paths[what] = str(Path(directory) / FILES[what])
    ledger = _ledger(ca_url, root or paths["ca"]) if ca_url else None  # type: ignore[arg-type]
    try:
        report = checklib.validate(paths["cert"], paths["key"], paths["ca"], name=name,  # type: ignore[arg-type]
                                   min_remaining=min_remaining, usage=usage, ledger=ledger,  # type: ignore[arg-type]
                                   environments=load_environments(environments_file) or None)
    except checklib.CheckFailed as failure:
        failed = failure.report
        if failed is None:  # the inputs could not even be read
            emit(as_json, {"ok": False, "failures": [
                {"class": failure.code, "exit_code": failure.exit_code, "detail": failure.detail}]},
                 f"FAIL input: {failure.detail}")
        else:
            emit(as_json, failed.to_dict(), lambda: _text(failed))
        click.echo(f"trustyard: check failed [{failure.code}]: {failure.detail}", err=True)
        ctx.exit(failure.exit_code)
    emit(as_json, report.to_dict(), lambda: _text(report))


def _ledger(ca_url: str, root: str) -> checklib.Ledger:
    """The CA's status of a serial, over HTTPS verified against ``root``."""
    def status(serial: str) -> dict[str, Any]:
        try:
            client = CAClient(ca_url, verify=root)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use {root} to verify the CA server: {exc.strerror or exc}") from None
        with client:
            return client.certificate_status(serial)
    return status


def _text(report: checklib.CheckReport) -> str:
    s = report.summary
    left = report.to_dict()["time_left"]
    if report.required_remaining is not None:
        left += f" (required: {report.to_dict()['required_remaining']})"
    rows = [
        ("subject", s["subject"] or "(empty)"),
        ("issuer", s["issuer"]),
        ("SANs", ", ".join(s["sans"]) or "(none)"),
        ("serial", s["serial"]),
        ("not before", s["not_before"]),
        ("not after", s["not_after"]),
        ("time left", left),
        ("chain", " -> ".join(report.chain)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k + ':':<{width + 1}} {v}" for k, v in rows]
    check_width = max(len(k) for k in report.checks) + 1
    for check, detail in report.checks.items():
        if check in report.failed:
            word = "FAIL"
        elif check in report.warnings:
            word = "WARN"
        elif detail.startswith("not checked"):
            word = "skip"
        else:  # "ok" or "ok (how)": the word says ok, the detail says how
            word, detail = "ok", detail.removeprefix("ok").strip().removeprefix("(").removesuffix(")")
        lines.append(f"{word:<4} {check + ':':<{check_width}} {detail}" if detail else f"{word:<4} {check}")
    if report.ok:
        lines.append("result: healthy" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))
    else:
        lines.append(f"FAIL result: {len(report.failed)} check(s) failed: {', '.join(report.failed)}")
    return "\n".join(lines)
