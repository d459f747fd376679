"""``trustyard rotate``: rotate the intermediate or the root on the CA home, one audited state at
a time (``ca/rotation.py``). A refused step exits with ``ExitCode.GATE_CLOSED`` naming why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..ca.config import load_config, resolve_home
from ..units import format_time
from .connect import cli_user, password_for
from .output import emit, home_option, json_option, password_file_option

reason_option = click.option("--reason", "why", default="by hand", show_default=True,
                             help="Why, for the audit log.")


@contextmanager
def _journal(home: str | None, password_file: str | None = None, needs_keys: bool = False) -> Iterator[Any]:
    from ..ca.home import open_home_store
    from ..ca.rotation_watch import home_journal

    config = load_config(resolve_home(home))
    password = password_for(config, password_file) if needs_keys else None
    store = open_home_store(config, migrate=False)
    try:
        yield home_journal(config, password, store)
    finally:
        store.close()


@click.group()
def rotate() -> None:
    """Rotate the CA's intermediate or root without a restart.

    \b
    prepared -> published -> adopted -> active -> retiring -> retired
    `rotate intermediate` / `rotate root` prepare; `rotate advance` moves one state when its
    gate holds (`--force` overrides only the adoption gate, listing the laggards in the audit
    log); `rotate rollback` works until active; `rotate status` shows what the next step needs.
    A refused step exits 5.
    """


def _start(kind: str) -> Callable[..., None]:
    @home_option
    @password_file_option
    @reason_option
    @json_option
    def start(home: str | None, password_file: str | None, why: str, as_json: bool) -> None:
        with _journal(home, password_file, needs_keys=True) as journal:
            row = journal.prepare(kind, f"cli:{cli_user()}", why)
        from ..ca.rotation import row_json

        emit(as_json, row_json(row), lambda: (
            f"rotation {row.id} ({kind}) prepared: new intermediate SHA256 {row.new_intermediate_sha256}"
            + (f", new root SHA256 {row.new_root_sha256}" if row.new_root_sha256 else "")
            + "\nNext: trustyard rotate advance (publishes it in the trust bundle)"))

    start.__doc__ = (f"Prepare a new {kind}: " + ("a new key and certificate signed by the current root."
                     if kind == "intermediate" else "a new root, its cross-certificate signed by the old root, "
                     "and a new intermediate under it.") + " Needs the root key.")
    return start


rotate.command("intermediate")(_start("intermediate"))
rotate.command("root")(_start("root"))


@rotate.command("advance")
@home_option
@click.option("--force", is_flag=True, help="Adopt although relying parties lag (the adoption gate only).")
@reason_option
@json_option
def advance(home: str | None, force: bool, why: str, as_json: bool) -> None:
    """Move the rotation in progress one state on; refused (exit 5) when its gate is closed."""
    from ..ca.rotation import row_json

    with _journal(home) as journal:
        row = journal.advance(f"cli:{cli_user()}", why, force=force)
    emit(as_json, row_json(row), lambda: f"rotation {row.id} ({row.kind}) is now {row.state}"
         + (f" (forced past: {', '.join(row.forced_laggards)})" if row.forced_laggards else ""))


@rotate.command("rollback")
@home_option
@reason_option
@json_option
def rollback(home: str | None, why: str, as_json: bool) -> None:
    """Undo the rotation in progress before it is active: its material leaves the bundle."""
    from ..ca.rotation import row_json

    with _journal(home) as journal:
        row = journal.rollback(f"cli:{cli_user()}", why)
    emit(as_json, row_json(row), lambda: f"rotation {row.id} ({row.kind}) rolled back")


@rotate.command("status")
@home_option
@json_option
def status(home: str | None, as_json: bool) -> None:
    """The rotation in progress: its state, coverage (N of M relying parties with each laggard
    and its last check-in), what it waits for, and what the next advance needs."""
    with _journal(home) as journal:
        report = journal.status()
    emit(as_json, report.to_json(), lambda: status_text(report))


def status_text(report: Any) -> str:
    r, gate = report.rotation, report.gate
    if r is None:
        return "No rotation yet. Start one with `trustyard rotate intermediate` or `trustyard rotate root`."
    since = r.at(r.state) or r.created_at
    lines = [f"rotation {r.id} ({r.kind}): {r.state} since {format_time(since)}"
             + (f", deadline {format_time(r.deadline_at)}" if r.deadline_at else "")]
    if gate is None:
        return "\n".join([*lines, "No rotation in progress."])
    if r.state == "published":
        lines.append(f"  coverage: {gate.covered} of {gate.relying} relying parties have bundle version "
                     f"{r.bundle_version}")
        lines += [f"  laggard: {p.name}  last check-in {format_time(p.last_checkin)}  bundle "
                  f"{p.bundle_version if p.bundle_version is not None else 'none'}" for p in gate.laggards]
    if gate.still_vouched is not None:
        lines.append(f"  still vouched for by the old intermediate: {gate.still_vouched} unexpired, unreplaced "
                     "certificate(s)")
    if r.forced_laggards:
        lines.append(f"  adopted by force past: {', '.join(r.forced_laggards)}")
    if gate.to is not None:
        if gate.ok:
            lines.append(f"  next: {gate.to} -- ready: trustyard rotate advance")
        else:
            lines.append(f"  next: {gate.to} -- waiting: " + "; ".join(gate.reasons)
                         + (" (--force overrides)" if gate.forceable else ""))
    return "\n".join(lines)
