"""``trustyard fleet``: the relying parties that check in with the CA (``ca.fleet``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from ..units import humanize
from .client_cmds import admin_token_file_option, ca_url_option, root_option
from .connect import admin_token_from, client_defaults, connect
from .output import emit, home_option, json_option, password_file_option, table


@click.command()
@click.option("--stale", is_flag=True, help="Only parties not seen for 3 of their check-in intervals.")
@admin_token_file_option
@ca_url_option
@root_option
@home_option
@password_file_option
@json_option
def fleet(stale: bool, admin_token_file: str | None, ca_url: str | None, root: str | None, home: str | None,
          password_file: str | None, as_json: bool) -> None:
    """List every relying party (agent or service) that checks in with the CA (administrator):
    its last check-in, the trust bundle it holds, when its certificate expires, and its state
    (stale: not seen for 3 of its check-in intervals)."""
    ca_url, root = client_defaults(home, ca_url, root)
    token = admin_token_from(home, admin_token_file) if ca_url else ""
    ca = connect(home, ca_url, root, password_file)
    try:
        parties = ca.fleet(token, stale)
    finally:
        ca.close()
    emit(as_json, {"parties": parties}, lambda: fleet_text(parties))


def fleet_text(parties: list[dict[str, Any]], now: datetime | None = None) -> str:
    if not parties:
        return "No relying parties have checked in."
    now = now or datetime.now(UTC)
    rows: list[tuple[str, ...]] = [
        ("PARTY", "KIND", "LAST CHECK-IN (AGE)", "BUNDLE", "CERT EXPIRES IN", "STATE", "FAILURES")]
    for p in parties:
        seen = now - datetime.fromisoformat(p["last_checkin"])
        left = datetime.fromisoformat(p["not_after"]) - now
        if p.get("bundle_version") is not None:
            bundle = f"v{p['bundle_version']}"
        else:
            bundle = (p.get("bundle_sha256") or "-")[:12]
        bundle += "" if p.get("bundle_current") else " (old)"
        rows.append((p["party"], p["kind"], f"{humanize(seen)} ago", bundle,
                     humanize(left) if left.total_seconds() > 0 else f"expired {humanize(-left)} ago",
                     p["state"], str(p["failures"])))
    return table(rows)
