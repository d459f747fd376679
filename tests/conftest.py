from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from trustyard.api.app import create_app
from trustyard.ca.authority import Authority
from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home, load_authority

from .support import PASSWORD, Server, create_database, postgres_bindir, postgres_cluster, start_server

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    if postgres_bindir() is None:
        pytest.fail("PostgreSQL binaries missing: run scripts/test-all (it installs them)")
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes this runs twice: on a SQLite file and on a throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    base = request.getfixturevalue("postgres")
    return create_database(base, f"t{next(_db_counter)}_{abs(hash(request.node.nodeid)) % 10**8}")


@pytest.fixture
def ca_home(tmp_path: Path, db_url: str) -> Path:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "10.0.0.0/8", "spiffe://prod.internal/*"),
                                          database_url=db_url))
    return home


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Path:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal", "10.0.0.0/8", "spiffe://prod.internal/*")))
    return home


@pytest.fixture
def authority(ca_home: Path) -> Iterator[Authority]:
    a = load_authority(ca_home, PASSWORD, minting=True)
    yield a
    a.store.close()


@pytest.fixture
def client(authority: Authority, ca_home: Path) -> Iterator[TestClient]:
    """The app in-process on ``authority``; server errors come back as 500s, not exceptions."""
    with TestClient(create_app(authority, load_config(ca_home)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin(ca_home: Path) -> dict[str, str]:
    return {"Authorization": "Bearer " + (ca_home / "admin.token").read_text().strip()}


@pytest.fixture
def server(ca_home: Path) -> Iterator[Server]:
    s = start_server(ca_home, workers=2)
    yield s
    s.stop()
