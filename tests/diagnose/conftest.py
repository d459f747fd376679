from __future__ import annotations

from collections.abc import Iterator

import pytest

from .scenarios import MATRIX, PKI, Live, healthy, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))

@pytest.fixture(scope="module")
def live_servers(pki: PKI) -> Iterator[dict[str, Live]]:
    """Every scenario of the matrix served at once, for the whole module."""
    servers = {name: build(pki) for name, build in {**MATRIX, "healthy": healthy}.items()}
    yield servers
    for live in servers.values():
        live.server.close()
