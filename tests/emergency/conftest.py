"""The in-process emergency tests' CA: a home on SQLite and on PostgreSQL (``ca_home``), and
an authority on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trustyard.ca import emergency
from trustyard.ca.authority import Authority
from trustyard.ca.home import load_authority

from ..support import PASSWORD


@pytest.fixture
def home(ca_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CA home on SQLite and on PostgreSQL; every worker sees a new emergency at once."""
    monkeypatch.setenv("TRUSTYARD_PASSWORD", PASSWORD.decode())
    monkeypatch.setattr(emergency, "ACTIVE_RECHECK", 0.0)
    return ca_home


@pytest.fixture
def ca(home: Path) -> Iterator[Authority[Any]]:
    authority = load_authority(home, PASSWORD, minting=True)
    yield authority
    authority.store.close()
