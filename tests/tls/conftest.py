from __future__ import annotations

from pathlib import Path

import pytest

from trustyard.testing import TestCA


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA("Prod")


@pytest.fixture(scope="session")
def other_ca() -> TestCA:
    return TestCA("Elsewhere")


@pytest.fixture
def server_dir(tmp_path: Path, ca: TestCA) -> Path:
    return ca.issue("localhost", "127.0.0.1", "spiffe://prod.internal/api").write_agent_dir(tmp_path / "server")


@pytest.fixture
def client_dir(tmp_path: Path, ca: TestCA) -> Path:
    return ca.issue("spiffe://prod.internal/orders", "orders.prod.internal").write_agent_dir(tmp_path / "client")
