"""Two replicas on one PostgreSQL sweep the same emergency at once: every certificate whose
grace ran out is revoked exactly once, with one audit entry each."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from trustyard.ca.config import load_config
from trustyard.ca.emergency import Emergencies, Selector
from trustyard.ca.home import InitOptions, init_home, load_authority, open_home_store

from ..support import PASSWORD, create_database
from .helpers import audit, issue


@pytest.mark.postgres
def test_two_replicas_revoke_each_certificate_once(tmp_path: Path, postgres: str) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(allow=("*.internal",), database_url=create_database(postgres, "em_rep")))
    authority = load_authority(home, PASSWORD, minting=True)
    stores = [open_home_store(load_config(home), migrate=False) for _ in range(2)]
    try:
        held = [issue(authority, f"s{i}.internal") for i in range(24)]
        issue(authority, "keep.internal")
        Emergencies(authority.store).start(Selector.of("name", ["s*.internal"]), "keyCompromise",
                                           timedelta(minutes=5))

        def later() -> datetime:
            return authority.clock() + timedelta(minutes=6)

        replicas = [Emergencies(store, clock=later) for store in stores]
        barrier, revoked = threading.Barrier(2), [0, 0]

        def run(i: int) -> None:
            barrier.wait()
            for _ in range(3):
                revoked[i] += replicas[i].sweep()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sum(revoked) == 24, revoked
        entries = [e for e in audit(authority, "certificate.revoke") if e.actor == "emergency"]
        assert sorted(e.target for e in entries) == sorted(h.serial for h in held)
        assert all(authority.get(h.serial).status == "revoked" for h in held)  # type: ignore[union-attr]
        assert replicas[0].status()["counts"] == {"replaced": 0, "pending": 0, "unreachable": 24}
    finally:
        for store in stores:
            store.close()
        authority.store.close()
