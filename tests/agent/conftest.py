from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support import Server
from .helpers import serve, short_ttl_home


@pytest.fixture
def short_home(tmp_path: Path) -> Path:
    """A CA home whose provisioner issues certificates of seconds."""
    return short_ttl_home(tmp_path / "ca")


@pytest.fixture
def ca(short_home: Path) -> Iterator[Server]:
    server = serve(short_home)
    yield server
    server.stop()
