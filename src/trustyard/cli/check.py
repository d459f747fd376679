"""``trustyard check``: refuse to start a service with a certificate that will not work."""

from __future__ import annotations

import click

from .. import check as checklib
from ..units import Threshold
from .output import emit, json_option

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
   0  healthy
   2  bad flags
{_CODES}

\b
Start a service only with a healthy certificate:
  trustyard check --cert tls.crt --key tls.key --ca ca.crt --name orders.internal \\
      --min-remaining 33% && exec orders-server
"""


@click.command(epilog=EPILOG, context_settings={"max_content_width": 100})
@click.option("--cert", "cert_path", required=True, type=click.Path(dir_okay=False),
              help="Certificate file: the leaf, then intermediates (PEM).")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Its private key (PEM).")
@click.option("--ca", "ca_path", required=True, type=click.Path(dir_okay=False),
              help="Trust bundle the chain must lead to (PEM).")
@click.option("--name", default=None, help="DNS name, IP or URI (spiffe://...) the certificate must carry.")
@click.option("--min-remaining", type=_ThresholdType(), default=None,
              help="Time that must be left: a duration (12h) or a share of the lifetime (33%).")
@click.option("--usage", type=click.Choice(["server", "client"]), default="server", show_default=True,
              help="What the certificate is for: its EKU must allow it.")
@json_option
@click.pass_context
def check(ctx: click.Context, cert_path: str, key_path: str, ca_path: str, name: str | None,
          min_remaining: Threshold | None, usage: str, as_json: bool) -> None:
    """Validate a certificate, its key and trust bundle before a service starts.

    Checks that the key matches, the chain leads to the bundle, the certificate is inside
    its validity window with enough time left, is not a CA, has an EKU fitting --usage and
    carries --name. Prints subject, issuer, SANs, serial, dates and time left.
    """
    try:
        report = checklib.validate(cert_path, key_path, ca_path, name=name, min_remaining=min_remaining,
                                   usage=usage)  # type: ignore[arg-type]
    except checklib.CheckFailed as failure:
        failed = failure.report
        if failed is None:  # the inputs could not even be read
            emit(as_json, {"ok": False, "failures": [
                {"class": failure.code, "exit_code": failure.exit_code, "detail": failure.detail}]}, "")
        else:
            emit(as_json, failed.to_dict(), lambda: _text(failed))
        click.echo(f"trustyard: check failed [{failure.code}]: {failure.detail}", err=True)
        ctx.exit(failure.exit_code)
    emit(as_json, report.to_dict(), lambda: _text(report))


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
    rows += [(f"check {k}", v) for k, v in report.checks.items()]
    rows.append(("result", "healthy" if report.ok else
                 "FAILED: " + ", ".join(f.code for f in report.failures)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)
