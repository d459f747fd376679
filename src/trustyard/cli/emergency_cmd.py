"""``trustyard emergency``: replace certificates across the fleet at once (``ca/emergency.py``),
on the CA home; ``emergency status`` follows it, ``emergency tokens`` mints bootstrap tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..ca.config import load_config, resolve_home
from ..units import parse_duration
from ..x509.revocation import REVOCATION_REASONS
from .connect import cli_user, password_for
from .output import DURATION, emit, home_option, json_option, password_file_option, table


@contextmanager
def _emergencies(home: str | None) -> Iterator[Any]:
    from ..ca.emergency import Emergencies
    from ..ca.home import open_home_store

    config = load_config(resolve_home(home))
    store = open_home_store(config)
    try:
        yield Emergencies(store, renewable_for=config.renewal.after_expiry), store
    finally:
        store.close()


@click.group(invoke_without_command=True)
@click.option("--spki", metavar="SHA256", help="The certificates with this public key (SPKI SHA-256, hex).")
@click.option("--serial", "serials", multiple=True, metavar="S",
              help="These certificates (hex serial; repeat, or separate by commas).")
@click.option("--name", metavar="PATTERN", help="The certificates with a name (subject or SAN) matching this glob.")
@click.option("--issuer", metavar="FINGERPRINT", help="The certificates signed by this CA (SHA-256 fingerprint).")
@click.option("--all", "all_", is_flag=True, help="Every unexpired certificate.")
@click.option("--reason", type=click.Choice(REVOCATION_REASONS), metavar="REASON",
              help="Revocation reason for the old certificates: " + ", ".join(REVOCATION_REASONS) + ".")
@click.option("--grace", type=DURATION, default="5m", show_default=True,
              help="How long an old certificate lives when its replacement is not seen serving.")
@click.option("--require-bootstrap", is_flag=True,
              help="The old certificates renew nothing: each holder needs a new bootstrap token "
                   "(`trustyard emergency tokens`).")
@home_option
@json_option
@click.pass_context
def emergency(ctx: click.Context, spki: str | None, serials: tuple[str, ...], name: str | None, issuer: str | None,
              all_: bool, reason: str | None, grace: str, require_bootstrap: bool, home: str | None,
              as_json: bool) -> None:
    """Replace certificates now: new keys everywhere, then the old certificates revoked.

    \b
    trustyard emergency (--spki SHA256 | --serial S... | --name PATTERN | --issuer FINGERPRINT | --all)
                        --reason REASON [--grace 5m] [--require-bootstrap]
    trustyard emergency status [--json]     replaced / pending / unreachable, per identity
    trustyard emergency tokens --out DIR    one bootstrap token per identity not replaced yet

    \b
    Of the issued, unexpired, not yet renewed certificates the selector matches, in one audited step:
      - their keys are never certified again (keyBlocked); each may renew once, to a new key
        (with --require-bootstrap: not at all, bootstrapRequired: deliver tokens);
      - every agent holding one is told renew-now at its next check-in; ACME renewal
        information says renew now (certbot, lego, cert-manager);
      - each is revoked with REASON once its replacement is seen serving, or when --grace runs
        out (`trustyard serve` does this; state: unreachable if nothing replaced it).
    A selector that matches nothing, or everything without --all, changes nothing and exits 6.
    """
    if ctx.invoked_subcommand is not None:
        if spki or serials or name or issuer or all_ or reason or require_bootstrap:
            raise click.UsageError(f"selector and --reason go with `trustyard emergency`, not with "
                                   f"`emergency {ctx.invoked_subcommand}`")
        return
    from ..ca.emergency import Selector, emergency_json
    from ..store.fleet_store import FleetStore

    chosen = [(kind, values) for kind, values in (
        ("spki", (spki,) if spki else ()), ("serial", tuple(s for v in serials for s in re.split(r"[,\s]+", v) if s)),
        ("name", (name,) if name else ()), ("issuer", (issuer,) if issuer else ()),
        ("all", ("all",) if all_ else ())) if values]
    if len(chosen) != 1:
        raise click.UsageError("name exactly one of --spki, --serial, --name, --issuer or --all")
    if reason is None:
        raise click.UsageError("--reason is required (why the old certificates are revoked)")
    kind, values = chosen[0]
    selector = Selector.of(kind, () if kind == "all" else values)
    if reason == "keyCompromise" and not require_bootstrap:
        click.echo("warning: keyCompromise without --require-bootstrap: each old certificate may still renew "
                   "once, to a new key, and whoever holds the stolen key can do that first and become the "
                   "trusted replacement. --require-bootstrap closes this (renewal refused; deliver "
                   "`trustyard emergency tokens`).", err=True)
    with _emergencies(home) as (emergencies, store):
        row, asked = emergencies.start(selector, reason, parse_duration(grace), require_bootstrap=require_bootstrap,
                                       actor=f"cli:{cli_user()}", fleet=FleetStore(store))
    shown = emergency_json(row)
    emit(as_json, {"emergency": shown, "renew_now": asked}, lambda: "\n".join([
        f"emergency {row.id}: {row.count} certificate(s) selected by {selector.text()}, reason {reason}",
        f"  renew-now sent to {asked} relying part(ies) at their next check-in; their keys are blocked",
        "  renewal by an old certificate: " + ("refused (bootstrapRequired): deliver `trustyard emergency tokens`"
                                              if require_bootstrap else "once, to a new key"),
        f"  old certificates are revoked when their replacement serves, at the latest {shown['deadline']}",
        "Follow it: trustyard emergency status"]))


@emergency.command("status")
@home_option
@json_option
def status(home: str | None, as_json: bool) -> None:
    """The last emergency: each affected certificate's identity and state (replaced: its
    replacement was seen serving; pending; unreachable: the grace ran out first), with counts."""
    with _emergencies(home) as (emergencies, _store):
        report = emergencies.status()
    emit(as_json, report, lambda: status_text(report))


def status_text(report: dict[str, Any]) -> str:
    e = report["emergency"]
    if e is None:
        return "No emergency has been started."
    counts = report["counts"]
    lines = [f"emergency {e['id']} started {e['started_at']} by {e['actor']}: {e['count']} certificate(s), "
             f"reason {e['reason']}, grace until {e['deadline']}"
             + (", bootstrap required" if e["require_bootstrap"] else ""),
             f"  replaced {counts['replaced']}, pending {counts['pending']}, unreachable {counts['unreachable']}"]
    rows: list[tuple[str, ...]] = [("IDENTITY", "SERIAL", "STATE", "REPLACEMENT")]
    rows += [(i["identity"], i["serial"], i["state"], i["replacement"] or "-") for i in report["identities"]]
    return "\n".join([*lines, table(rows)])


@emergency.command("tokens")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Write one IDENTITY.token file (0600) per identity into this directory.")
@click.option("--ttl", type=DURATION, default="1h", show_default=True, help="How long each token can be redeemed.")
@home_option
@password_file_option
@json_option
def tokens(out: Path | None, ttl: str, home: str | None, password_file: str | None, as_json: bool) -> None:
    """Mint one bootstrap token per identity of the last emergency not replaced yet, for the
    operator to deliver (`trustyard agent --token-file`); the certificate a token buys counts as
    the replacement when it checks in. Needs --out DIR or --json (tokens are secrets)."""
    from ..ca.home import load_authority
    from ..files import write_private

    if out is None and not as_json:
        raise click.UsageError("say where the tokens go: --out DIR, or --json to print them")
    path = resolve_home(home)
    config = load_config(path)
    authority = load_authority(path, password_for(config, password_file), minting=True, config=config)
    try:
        from ..ca.emergency import Emergencies

        minted = Emergencies(authority.store).tokens(authority, parse_duration(ttl), actor=f"cli:{cli_user()}")
    finally:
        authority.store.close()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for entry, file_name in zip(minted, _file_names(minted), strict=True):
            entry["file"] = str(out / file_name)
            write_private(entry["file"], entry["token"] + "\n")
    shown = minted if out is None else [{k: v for k, v in e.items() if k != "token"} for e in minted]
    emit(as_json, {"tokens": shown}, lambda: "\n".join(
        [f"{len(minted)} bootstrap token(s), each redeemable until {minted[0]['expires_at'] if minted else '-'}:"]
        + [f"  {e['identity']}: {e['file']}" for e in shown]))


def _file_names(minted: list[dict[str, Any]]) -> list[str]:
    """One distinct ``NAME.token`` per minted token: the identity's file name, with a short hash of
    the token's group (identity, names, provisioner) when several groups share that name."""
    import hashlib
    from collections import Counter

    plain = [_file_name(e["identity"]) for e in minted]
    shared = Counter(plain)
    names = []
    for entry, name in zip(minted, plain, strict=True):
        if shared[name] > 1:
            key = json.dumps([entry["identity"], entry["sans"], entry.get("provisioner", "")], sort_keys=True)
            name = f"{name[:180]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        names.append(name + ".token")
    if len(set(names)) != len(names):  # never one token file written over another
        raise click.ClickException("two bootstrap tokens would be written to the same file; nothing written")
    return names


def _file_name(identity: str) -> str:
    """A file name for an identity (a DNS name as it is; ``*``, ``/`` and ``:`` become ``_``)."""
    return (re.sub(r"[^A-Za-z0-9._-]", "_", identity).strip(".") or "identity")[:200]
