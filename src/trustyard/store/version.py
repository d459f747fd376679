"""The schema version, checked without Alembic: one query of ``alembic_version``.

Migrations run in ``trustyard init``, ``trustyard serve`` and ``trustyard db upgrade``
(``SqlStore.migrate``, Alembic). Every other command only checks, so that it neither imports
Alembic nor changes a database a running CA uses: ``check`` refuses an old schema with the
command to run. The newest revision is read from the revision files' ``revision`` and
``down_revision`` lines, so a new revision file needs no edit here.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_ASSIGN = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def revisions() -> dict[str, str | None]:
    """Each known revision and the one it follows (``None`` for the first)."""
    chain: dict[str, str | None] = {}
    for path in sorted(VERSIONS.glob("*.py")):
        found = dict(_ASSIGN.findall(path.read_text()))
        if "revision" in found:
            chain[found["revision"].strip("\"'")] = (None if found.get("down_revision", "None") == "None"
                                                     else found["down_revision"].strip("\"'"))
    return chain


def head() -> str:
    """The newest revision: the one no other revision follows."""
    chain = revisions()
    heads = set(chain) - {down for down in chain.values() if down}
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; ``None`` when it was never migrated.
    A SQLite file is read with the standard library's ``sqlite3`` (read-only, no SQLAlchemy)."""
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        import sqlite3

        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            return None
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        finally:
            db.close()
        return str(row[0]) if row else None
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from .engine import normalize_url

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            at = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if at is None else str(at)
    except (ProgrammingError, OperationalError):
        return None  # no such table: never migrated
    finally:
        engine.dispose()


def check(url: str, home: str | Path | None = None) -> None:
    """Refuse (``ConfigError``) a database whose schema is not the newest this trustyard knows,
    naming the command that migrates it."""
    at, newest = current(url), head()
    if at == newest:
        return
    where = f" --home {home}" if home is not None else ""
    if at is not None and at not in revisions():
        raise ConfigError(f"the database schema is at revision {at}, newer than this trustyard knows "
                          f"({newest}): run a newer trustyard")
    raise ConfigError(f"the database schema is at revision {at or 'none'}, this trustyard needs {newest}: "
                      f"run `trustyard db upgrade{where}` (or `trustyard serve`, which migrates when it starts)")
