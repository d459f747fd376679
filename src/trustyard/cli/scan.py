"""``trustyard scan``: inventory certificates and keys in files, keystores, manifests and endpoints."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO, TypeVar

import click

from ..clientconfig import load_environments
from ..errors import BadRequest, ExitCode
from ..inventory.endpoints import DEFAULT_CONCURRENCY, Endpoint
from ..inventory.findings import Rules
from ..inventory.ledger import DEFAULT_SPILL_AT
from ..inventory.ledger_report import write_csv, write_json, write_prometheus, write_table
from ..inventory.model import Inventory, Severity
from ..inventory.scan import ScanOptions, count_files, run_scan, stream_scan, where
from ..inventory.sources import DEFAULT_PASSWORDS
from ..units import Threshold, parse_duration
from .output import DURATION, environments_option


def _env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r}: write NAME=PATH, e.g. prod=/srv/prod-config")
        if not os.path.lexists(path):
            raise click.BadParameter(f"{value!r}: {path} does not exist")
        out.append((name, path))
    return tuple(out)


def _endpoints(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Endpoint, ...]:
    try:
        return tuple(Endpoint.parse(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _threshold(ctx: click.Context, param: click.Parameter, value: str | None) -> Threshold | None:
    if value is None:
        return None
    try:
        return Threshold.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"max_content_width": 100})
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--endpoint", "endpoints", multiple=True, callback=_endpoints, metavar="HOST:PORT[/SNI]",
              help="A live TLS endpoint: record the chain it sends (repeatable).")
@click.option("--env", "environments", multiple=True, callback=_env, metavar="NAME=PATH",
              help="Scan PATH as environment NAME, to find keys and certs copied across environments.")
@click.option("--ca", "ca_bundles", multiple=True, type=click.Path(exists=True), metavar="BUNDLE",
              help="Trust bundle to check chains against (repeatable).")
@click.option("--warn", default=None, callback=_threshold, metavar="DURATION|PERCENT",
              help="Flag certificates expiring within this time (30d), or this share of their lifetime "
                   "(33%).  [default: a third of the lifetime, at most 30d: a 24h certificate at 8h left]")
@click.option("--max-validity", type=DURATION, default="398d", show_default=True,
              help="Longest acceptable leaf lifetime.")
@click.option("--password", "passwords", multiple=True, metavar="TEXT",
              help="Password to try on PKCS#12, JKS and encrypted keys (repeatable; '' and changeit are tried).")
@click.option("--where", "where_sha256", default=None, metavar="SHA256",
              help="Blast radius: every location holding this certificate or SPKI fingerprint (or a prefix "
                   "of it, such as the 16 digits the table prints), and the trust stores that trust it.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "prometheus"]), default="table",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json: one JSON document.")
@click.option("--fail-on", type=click.Choice(["info", "warning", "error", "critical"]), default="error",
              show_default=True, help="Exit 1 when a finding is at least this severe.")
@click.option("--ignore", "ignore", multiple=True, metavar="GLOB",
              help="Report verification_disabled in files matching GLOB (the path or a trailing part of it: "
                   "'tests/*', '*.md') as suppressed, not as findings (repeatable).")
@click.option("--no-code", is_flag=True, help="Do not look for code and configuration that turn verification off.")
@click.option("--timeout", type=DURATION, default="5s", show_default=True,
              help="Per-endpoint connect + handshake timeout.")
@click.option("--concurrency", default=DEFAULT_CONCURRENCY, show_default=True, help="Endpoints probed at once.")
@environments_option
def scan(paths: tuple[str, ...], endpoints: tuple[Endpoint, ...], environments: tuple[tuple[str, str], ...],
         ca_bundles: tuple[str, ...], warn: Threshold | None, max_validity: str, passwords: tuple[str, ...],
         where_sha256: str | None, fmt: str, as_json: bool, fail_on: str, ignore: tuple[str, ...], no_code: bool,
         timeout: str, concurrency: int, environments_file: str | None) -> int:
    """Inventory certificates and private keys, and report what is wrong with them.

    Reads PEM (certificates, bundles, keys, PKCS#7), DER, PKCS#7, PKCS#12, Java keystores,
    and Kubernetes Secret/ConfigMap manifests under PATHS (recursively), plus live
    --endpoint chains. Findings: self_signed_leaf, expired, not_yet_valid, expiring,
    shared_key, cross_environment, shared_cert, weak_key, no_san, long_validity,
    leaf_in_trust_store, key_unprotected, key_mismatch, untrusted_chain, missing_intermediate,
    wrong_environment (a chain leading to another environment's root: --environments).

    Code, configuration and scripts under PATHS that switch certificate verification off
    are findings too: verification_disabled (error), with file, line, language, the
    construct, the host or URL it talks to and the fix (Python, Go, Node, Java/Kotlin, Rust,
    .NET, Ruby, PHP, shell, Dockerfiles, YAML/INI/TOML/JSON, nginx). A comment
    `trustyard: allow-insecure <reason>` on the same or the previous line, or --ignore,
    reports one as suppressed instead.

    The table has one row per distinct certificate (CERTIFICATE is the start of its SHA-256
    fingerprint, which --where accepts) with its locations beneath, then the findings with a
    fix: line each, then a summary. A self-signed certificate is a service certificate
    unless it signed another certificate in the scan or sits in a trust store among other
    roots, whatever its basicConstraints say. A progress bar is drawn on stderr when it is a
    terminal (not with TRUSTYARD_NO_PROGRESS=1).

    Memory stays bounded however many certificates there are: what the findings need of each
    is kept in memory up to TRUSTYARD_SCAN_SPILL_ROWS rows (50000), then in a temporary SQLite
    file in $TMPDIR (deleted when the scan ends; on a tmpfs /tmp that file is in RAM).

    \b
    Exit status: 0 no finding at or above --fail-on, 1 otherwise, 2 usage error (including a
    PATH that does not exist).

    \b
    Examples:
      trustyard scan /etc/ssl/private ./k8s --ca ca.crt
      trustyard scan --env prod=/srv/prod --env staging=/srv/staging --json
      trustyard scan . --endpoint api.internal:443/api.internal --format prometheus
      trustyard scan . --where 3f2a9c1d0b7e4a55   (the CERTIFICATE column)
    """
    if not (paths or endpoints or environments):
        raise click.UsageError("give at least one PATH, --env NAME=PATH or --endpoint HOST:PORT")
    try:
        rules = Rules(now=datetime.now(UTC), warn=warn, max_leaf_validity=parse_duration(max_validity),
                      environments=load_environments(environments_file) or None)
        timeout_s = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    options = ScanOptions(
        paths=paths, environments=environments, endpoints=endpoints, ca_bundles=ca_bundles,
        passwords=tuple(p.encode() for p in passwords) + DEFAULT_PASSWORDS, rules=rules,
        timeout=timeout_s, concurrency=concurrency, code=not no_code, ignore=ignore,
    )
    if where_sha256:
        inv: Inventory = scan_with_progress(options, sys.stderr)
        try:
            answer = where(inv, where_sha256)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--where'") from None
        if as_json or fmt == "json":
            click.echo(json.dumps(answer, indent=2))
        else:
            click.echo(f"{answer['query']}: {len(answer['locations'])} locations")
            for loc in answer["locations"]:
                click.echo(f"  holds: {loc}")
            for store in answer["trusted_by"]:
                click.echo(f"  trusted by: {store}")
        return ExitCode.OK if answer["locations"] else ExitCode.FAILED
    if as_json:
        fmt = "json"
    try:
        spill_at = int(os.environ.get("TRUSTYARD_SCAN_SPILL_ROWS") or DEFAULT_SPILL_AT)
    except ValueError:
        raise BadRequest("TRUSTYARD_SCAN_SPILL_ROWS is a number of rows, e.g. 50000") from None
    result = scan_with_progress(options, sys.stderr, run=functools.partial(stream_scan, spill_at=spill_at))
    try:
        out = sys.stdout
        if fmt == "table":
            write_table(result, out, now=rules.now)
            out.write("\n")
        else:
            {"json": write_json, "csv": write_csv, "prometheus": write_prometheus}[fmt](result, out)
            if fmt == "json":
                out.write("\n")
        out.flush()
        threshold = Severity.parse(fail_on)
        return ExitCode.FAILED if any(f.severity >= threshold for f in result.findings) else ExitCode.OK
    finally:
        result.close()


R = TypeVar("R")


def scan_with_progress(options: ScanOptions, stream: TextIO,
                       run: Callable[..., R] = run_scan) -> R:  # type: ignore[assignment]
    """Run the scan (``run_scan`` unless told) with a progress bar on ``stream`` when it is a
    terminal (and $TRUSTYARD_NO_PROGRESS is unset); in a pipe or a log file, nothing is drawn."""
    if not stream.isatty() or os.environ.get("TRUSTYARD_NO_PROGRESS"):
        return run(options)
    total = count_files(list(options.paths) + [p for _, p in options.environments]) + len(options.endpoints)
    with click.progressbar(length=total, label="scanning", file=stream) as bar:
        return run(options, progress=bar.update)


__all__ = ["scan", "scan_with_progress"]
