"""docs/ARCHITECTURE.md stays true: every file and package it names exists, and the layering
rules it states hold in the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "trustyard"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# `ca/authority.py`, `store/migrations/versions/`, `tests/support.py`, `docs/ARCHITECTURE.md`: code
# spans that are paths of the repository. Home files (`trustyard.toml`, `ca/root.key`) are not.
PATH = re.compile(r"`([\w./-]+(?:\.py|\.md|/))`")


def mentioned_paths() -> list[str]:
    return sorted(set(PATH.findall(DOC.read_text())))


def test_the_doc_names_the_files_a_newcomer_opens() -> None:
    paths = mentioned_paths()
    assert {"ca/authority.py", "acme/service.py", "api/app.py", "store/schema.py", "cli/__init__.py"} <= set(paths)


def test_every_path_in_the_doc_exists() -> None:
    missing = [p for p in mentioned_paths() if not ((ROOT / p).exists() or (PACKAGE / p).exists())]
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def _imports(path: Path) -> set[str]:
    """The trustyard packages and modules a file imports (relative imports resolved)."""
    out = set()
    here = path.relative_to(PACKAGE).parts[:-1]
    for dots, name in re.findall(r"^\s*from (\.+)([\w.]*) import", path.read_text(), re.M):
        base = here[:len(here) - (len(dots) - 1)]
        out.add(".".join([*base, name]).strip(".").split(".")[0] if base or name else "")
    out |= {m.split(".")[0] for m in re.findall(r"^\s*(?:from|import) trustyard\.([\w.]+)", path.read_text(), re.M)}
    return out


def test_nothing_imports_cli_or_api() -> None:
    roots = ("cli", "api", "__main__.py")  # the composition roots and the entry point
    offenders = [str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py")
                 if f.relative_to(PACKAGE).parts[0] not in roots and _imports(f) & {"cli", "api"}]
    assert not offenders


def test_acme_never_imports_the_web_framework() -> None:
    offenders = [str(f.relative_to(PACKAGE)) for f in (PACKAGE / "acme").rglob("*.py")
                 if re.search(r"^\s*(from|import) (starlette|uvicorn)\b", f.read_text(), re.M)]
    assert not offenders


def test_x509_and_migrate_never_import_the_test_helpers() -> None:
    """testing.py (the test PKI) builds on x509/; x509/ and migrate/ do not build on it."""
    offenders = [str(f.relative_to(PACKAGE)) for part in ("x509", "migrate") for f in (PACKAGE / part).rglob("*.py")
                 if "testing" in _imports(f)]
    assert not offenders
