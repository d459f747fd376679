"""``trustyard db``: the database schema. Migrations run here, in ``init`` and in ``serve``;
every other command only checks the version (``store.version``) and names this one."""

from __future__ import annotations

import click

from ..ca.config import load_config, resolve_home
from .output import emit, home_option, json_option


@click.group()
def db() -> None:
    """The CA database's schema."""


@db.command()
@home_option
@json_option
def upgrade(home: str | None, as_json: bool) -> None:
    """Migrate the database to the schema this trustyard needs (idempotent; safe while
    replicas run). Other commands refuse an old schema and say to run this."""
    from ..ca.home import open_home_store
    from ..store import version

    config = load_config(resolve_home(home))
    before = version.current(config.db_url)
    open_home_store(config, migrate=True).close()
    after = version.current(config.db_url)
    emit(as_json, {"from": before, "to": after, "changed": before != after},
         lambda: f"database schema upgraded from {before or 'none'} to {after}" if before != after
         else f"database schema already at {after}")
