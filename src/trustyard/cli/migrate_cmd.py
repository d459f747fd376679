"""``trustyard migrate``: plan the boundaries off self-signed certificates, move each one step
at a time (audited, idempotent, resumable), roll back, and show where every boundary stands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..ca.config import load_config, resolve_home
from ..errors import ExitCode
from ..units import format_time, parse_duration
from .migrate_demo import demo
from .output import DURATION, emit, home_option, json_option
from .scan import _endpoints, _env


def _password_files(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """LOCATION=FILE pairs -> {absolute location: absolute file}, each file readable now."""
    out = {}
    for value in values:
        location, sep, file = value.rpartition("=")
        if not sep or not location or not file:
            raise click.BadParameter(f"{value!r}: write LOCATION=FILE, e.g. /srv/app/truststore.jks=/run/pw")
        try:
            Path(file).read_text()
        except OSError as exc:
            raise click.BadParameter(f"{value!r}: cannot read {file}: {exc.strerror}") from None
        out[os.path.abspath(location)] = os.path.abspath(file)
    return out


def read_passwords(files: dict[str, str]) -> dict[str, str]:
    return {location: Path(file).read_text().rstrip("\r\n") for location, file in files.items()}


password_files_option = click.option(
    "--password-file", "passwords", multiple=True, callback=_password_files, metavar="LOCATION=FILE",
    help="The password of the keystore at LOCATION, in FILE (repeatable; '' and changeit are tried otherwise).")


def _store(home: str | None) -> Any:
    from ..ca.home import open_home_store
    from ..store.migrate_store import MigrateStore

    config = load_config(resolve_home(home))
    return config, MigrateStore(open_home_store(config, migrate=False))


@click.group()
def migrate() -> None:
    """Move services off self-signed certificates, one boundary at a time.

    \b
    A boundary is one server identity (its endpoint, certificate and key files) and every
    client location that trusts it. Its states, in order: planned, issued, trusted,
    switched, verified, retired, done. Each step writes files atomically after a backup,
    is audited, and can be re-run; `rollback` restores the backups byte for byte.
    `trustyard migrate demo DIR` builds a small estate to try it on.
    """


migrate.add_command(demo)


@migrate.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--endpoint", "endpoints", multiple=True, callback=_endpoints, metavar="HOST:PORT[/SNI]",
              help="A live endpoint serving a server identity (repeatable).")
@click.option("--env", "environments", multiple=True, callback=_env, metavar="NAME=PATH",
              help="Scan PATH as environment NAME (production boundaries are planned last).")
@password_files_option
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave files matching GLOB out of the plan, e.g. '*/legacy/*' (repeatable).")
@click.option("--save", is_flag=True, help="Save the plan in the CA's database, so steps can name boundaries by id.")
@click.option("--timeout", type=DURATION, default="5s", show_default=True, help="Per-endpoint timeout.")
@home_option
@json_option
def plan(paths: tuple[str, ...], endpoints: tuple[Any, ...], environments: tuple[tuple[str, str], ...],
         passwords: dict[str, str], excludes: tuple[str, ...], save: bool, timeout: str, home: str | None,
         as_json: bool) -> int:
    """Build, from one scan, the boundaries to migrate, ordered by risk.

    Fewest client locations first, non-production before production, boundaries without
    disabled verification before those with. Per boundary, the files and endpoints each
    step touches. Unreadable keystores, wrong passwords and manifests that are not
    Kubernetes objects stop the plan, naming the location.

    \b
    Exit status: 0 planned (and saved with --save), 1 a location cannot be used (the message
    names it), 2 usage error.
    """
    from ..inventory.findings import Rules
    from ..inventory.scan import ScanOptions, run_scan
    from ..inventory.sources import DEFAULT_PASSWORDS
    from ..migrate import plan as planning

    if not (paths or endpoints or environments):
        raise click.UsageError("give at least one PATH, --env NAME=PATH or --endpoint HOST:PORT")
    from datetime import UTC, datetime

    options = ScanOptions(paths=paths, environments=environments, endpoints=endpoints,
                          passwords=tuple(p.encode() for p in read_passwords(passwords).values()) + DEFAULT_PASSWORDS,
                          rules=Rules(now=datetime.now(UTC)), timeout=parse_duration(timeout).total_seconds())
    inv = run_scan(options)
    planning.exclude(inv, excludes)
    planning.refuse_unreadable(inv, list(paths) + [p for _, p in environments], excludes)
    boundaries = planning.build(inv)
    roots = [os.path.abspath(p) for p in [*paths, *(p for _, p in environments)]]
    for b in boundaries:  # the files, not the passwords, are kept with the plan
        b.password_files = {c.path: passwords[c.path] for c in b.clients if c.path in passwords}
        b.roots = roots  # a step refuses to write through a symlink below them
    saved: dict[str, str] = {}
    docs = [b.to_json() for b in boundaries]
    if save:
        _config, store = _store(home)
        try:
            saved = store.save_plan([(b.id, b.spki, d) for b, d in zip(boundaries, docs, strict=True)], _actor())
        finally:
            store.sql.close()
    doc = {"boundaries": [{**{k: v for k, v in d.items() if k != "old_cert_pem"},
                           "steps": b.touches(), "saved": saved.get(b.id)}
                          for b, d in zip(boundaries, docs, strict=True)]}

    def text() -> str:
        out = planning.render(boundaries)
        if saved:
            out += "\n\nsaved: " + ", ".join(f"{k} {v}" for k, v in saved.items())
        return out

    emit(as_json, doc, text)
    return ExitCode.OK


@migrate.command()
@click.argument("boundary_id", metavar="ID")
@click.option("--to", "to_state", type=click.Choice(["issued", "trusted", "switched", "verified", "retired", "done"]),
              default=None, help="Advance through every state up to this one [default: the next state].")
@click.option("--dry-run", is_flag=True, help="Print what the step would do; change nothing.")
@password_files_option
@click.option("--ca-password-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the CA key password, for `issued` (else $TRUSTYARD_PASSWORD).")
@click.option("--provisioner", default="default", show_default=True, help="Provisioner whose policy issues.")
@click.option("--reload-cmd", default=None, metavar="COMMAND",
              help="Shell command `switched` runs after replacing the server's files (e.g. 'nginx -s reload').")
@click.option("--wait", type=DURATION, default="10s", show_default=True,
              help="How long `switched` waits for the endpoint to serve the CA certificate.")
@click.option("--timeout", type=DURATION, default="5s", show_default=True, help="Connect and handshake timeout.")
@home_option
@json_option
def step(boundary_id: str, to_state: str | None, dry_run: bool, passwords: dict[str, str],
         ca_password_file: str | None, provisioner: str, reload_cmd: str | None, wait: str, timeout: str,
         home: str | None, as_json: bool) -> int:
    """Advance boundary ID by one state (--to: by several).

    \b
    issued    a CA certificate for the server's names, key made here, beside the old files
    trusted   the CA root added next to the old copy in every client location
    switched  the server's files replaced; the endpoint must serve the CA chain
    verified  each client location's trust alone verifies the endpoint, hostname checked,
              and no disabled verification is left for the boundary's hosts
    retired   the old self-signed copy removed from every client location, then verified
    done
    A step whose check fails changes nothing further and says what to fix.

    \b
    Exit status: 0 moved, 1 a check failed (the boundary's `blocking` says why) or a location
    or endpoint cannot be used (the message names it), 2 usage error.
    """
    from ..migrate.steps import Settings, advance

    config, store = _store(home)
    try:
        settings = Settings(home=config.home, config=config, store=store, actor=_actor(),
                            passwords=read_passwords(passwords),
                            ca_password_file=ca_password_file, provisioner=provisioner,
                            wait=parse_duration(wait).total_seconds(), timeout=parse_duration(timeout).total_seconds(),
                            dry_run=dry_run, reload_cmd=reload_cmd)
        outcomes = advance(settings, boundary_id, to_state)
    finally:
        store.sql.close()
    ok = all(o.ok for o in outcomes)
    emit(as_json, {"steps": [o.to_json() for o in outcomes], "ok": ok},
         lambda: "\n".join(o.render() for o in outcomes))
    return ExitCode.OK if ok else ExitCode.FAILED


@migrate.command()
@click.argument("boundary_id", metavar="ID")
@click.option("--ca-password-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the CA key password, to revoke what `issued` issued (else $TRUSTYARD_PASSWORD).")
@home_option
@json_option
def rollback(boundary_id: str, ca_password_file: str | None, home: str | None, as_json: bool) -> int:
    """Return boundary ID to its previous state, restoring the backups byte for byte.

    Rolling back `issued` also revokes the certificate it issued (reason superseded).

    \b
    Exit status: 0 rolled back, 1 nothing to roll back, or a file changed since the step (named).
    """
    from ..migrate.steps import Revoker, roll_back

    config, store = _store(home)
    try:
        outcome = roll_back(store, _actor(), boundary_id, Revoker(config.home, config, ca_password_file),
                            home=config.home)
    finally:
        store.sql.close()
    emit(as_json, outcome.to_json(), outcome.render)
    return ExitCode.OK if outcome.ok else ExitCode.FAILED


@migrate.command()
@home_option
@json_option
def status(home: str | None, as_json: bool) -> int:
    """Every saved boundary: its state, what blocks it and when it moved."""
    _config, store = _store(home)
    try:
        rows = store.all()
    finally:
        store.sql.close()
    doc = {"boundaries": [{"id": r.id, "state": r.state, "names": r.plan.get("names", []),
                           "endpoint": r.plan.get("endpoint"), "blocking": r.blocking,
                           "moved_at": format_time(r.moved_at)} for r in rows]}

    def text() -> str:
        if not rows:
            return "no saved plan: run `trustyard migrate plan PATH... --save`"
        lines = []
        for b in doc["boundaries"]:
            lines.append(f"{b['id']}  {b['state']:<9} {', '.join(b['names'])}  endpoint {b['endpoint'] or '-'}"
                         f"  moved {b['moved_at']}")
            if b["blocking"]:
                lines.append(f"    blocking: {b['blocking']}")
        return "\n".join(lines)

    emit(as_json, doc, text)
    return ExitCode.OK


def _actor() -> str:
    from .connect import cli_user

    return f"cli:{cli_user()}"


__all__ = ["migrate"]
