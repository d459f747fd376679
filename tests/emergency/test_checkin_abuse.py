"""A renew-now belongs to the certificate it was asked of: a check-in by any other certificate,
even of the same identity and reporting the other party's instance id, or a replayed proof,
can neither clear it, nor receive it, nor retire an old certificate an emergency replaces."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from trustyard.ca import emergency, proofs
from trustyard.ca.authority import Authority
from trustyard.ca.home import load_authority
from trustyard.errors import Unauthorized
from trustyard.store.fleet_store import FleetStore

from ..support import PASSWORD
from .helpers import checkin, em, fleet_of, issue, renew, renew_now, report, status


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


def test_another_instance_reporting_my_instance_id_cannot_clear_my_renew_now(ca: Authority[Any]) -> None:
    fleet = fleet_of(ca)
    mine = issue(ca, "api.internal")
    theirs = renew(ca, issue(ca, "api.internal"))  # a renewed certificate of the same identity
    checkin(fleet, mine, "inst-a")
    assert fleet.request_renewal(lambda p: p.instance == "inst-a", timedelta(0)) == 1
    # the other instance claims inst-a: it is not told to renew, and the request stays
    assert not renew_now(checkin(fleet, theirs, "inst-a"))
    row = FleetStore(ca.store).get("api.internal#inst-a")  # type: ignore[arg-type]
    assert row is not None and row.renew_serial == mine.serial
    assert renew_now(checkin(fleet, mine, "inst-a"))  # still delivered to the holder
    # its own renewal clears it
    assert not renew_now(checkin(fleet, renew(ca, mine), "inst-a"))
    row = FleetStore(ca.store).get("api.internal#inst-a")  # type: ignore[arg-type]
    assert row is not None and row.renew_serial is None


def test_a_replayed_checkin_proof_is_refused_and_clears_nothing(ca: Authority[Any]) -> None:
    fleet = fleet_of(ca)
    mine, theirs = issue(ca, "db.internal"), renew(ca, issue(ca, "db.internal"))
    checkin(fleet, mine, "inst-a")
    fleet.request_renewal("db.internal", timedelta(0))
    forged = proofs.make(theirs.key, theirs.chain, proofs.CHECKIN, report=report("inst-a"))
    fleet.checkin(forged)
    with pytest.raises(Unauthorized):
        fleet.checkin(forged)
    assert renew_now(checkin(fleet, mine, "inst-a"))
    # an old proof of mine, replayed after a check-in of the other certificate, changes no request
    old = proofs.make(mine.key, mine.chain, proofs.CHECKIN, report=report("inst-a"))
    assert renew_now(fleet.checkin(old))
    checkin(fleet, theirs, "inst-a")
    assert renew_now(fleet.checkin(old))  # accepted (not the last proof), and the request is intact


def test_an_emergency_for_one_instance_neither_reaches_nor_retires_another(ca: Authority[Any], home: Path,
                                                                           capsys: Any) -> None:
    fleet = fleet_of(ca)
    honest, attacker, _other = issue(ca, "web.internal"), issue(ca, "web.internal"), issue(ca, "x.internal")
    checkin(fleet, honest, "inst-a")
    checkin(fleet, attacker, "inst-a")  # poses as inst-a
    assert em(capsys, home, "--serial", attacker.serial, "--reason", "keyCompromise")[0] == 0
    assert not renew_now(checkin(fleet, honest, "inst-a"))  # the honest holder is not dragged in
    assert renew_now(checkin(fleet, attacker, "inst-b"))
    # the attacker's replacement reports the honest instance's serial as its endpoint: not serving it
    replacement = renew(ca, attacker)
    checkin(fleet, replacement, "inst-a", endpoint_serial=honest.serial)
    assert ca.get(attacker.serial).status == "issued"  # type: ignore[union-attr]
    assert ca.get(honest.serial).status == "issued"  # type: ignore[union-attr]
    report_ = status(capsys, home)
    assert report_["identities"] == [{"identity": "web.internal", "serial": attacker.serial, "state": "pending",
                                      "replacement": replacement.serial}]
    # serving its own certificate, it retires the old one
    checkin(fleet, replacement, "inst-b", endpoint_serial=replacement.serial)
    assert ca.get(attacker.serial).status == "revoked"  # type: ignore[union-attr]
    assert ca.get(honest.serial).status == "issued"  # type: ignore[union-attr]
