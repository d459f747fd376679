"""The relying-party table on SQLite and PostgreSQL: a check-in inserts then updates one row per
party, the proof of the last check-in is not accepted again, and a renew-now request is due from
its time, only for the serial it names, and cleared only by a check-in with that serial's renewal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from trustyard.errors import Unauthorized
from trustyard.store.fleet_store import CheckinRow, FleetStore
from trustyard.store.sql import open_store

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ROW = CheckinRow(party="a.internal#01", identity="a.internal", instance="01", kind="agent", serial="1a",
                 not_after=NOW + timedelta(hours=1), bundle_version=3, bundle_sha256="ab" * 32,
                 endpoint_serial=None, failures=0, last_error=None, agent_version="0.1.0", interval_seconds=60)


def test_checkins_renewal_requests_and_replays(db_url: str) -> None:
    db = open_store(db_url)
    try:
        store = FleetStore(db)
        assert store.checkin(ROW, "j1", NOW).new_party
        assert not store.checkin(replace(ROW, failures=2, last_error="x"), "j2", NOW + timedelta(seconds=60)).new_party
        row = store.get(ROW.party)
        assert row is not None and row.failures == 2 and row.last_error == "x" and row.first_seen == NOW
        assert row.last_checkin == NOW + timedelta(seconds=60) and row.bundle_version == 3

        with pytest.raises(Unauthorized):
            store.checkin(replace(ROW, failures=9), "j2", NOW + timedelta(seconds=61))
        assert store.get(ROW.party) == row  # the refused one changed nothing

        # a request for another serial than the party holds is not recorded
        assert store.request_renewals([(ROW.party, "ff", NOW)]) == 0
        assert store.request_renewals([(ROW.party, "1a", NOW + timedelta(minutes=5))]) == 1
        assert not store.checkin(ROW, "j3", NOW + timedelta(minutes=2)).renew_due  # not yet
        assert store.checkin(ROW, "j4", NOW + timedelta(minutes=6)).renew_due
        assert store.checkin(ROW, "j5", NOW + timedelta(minutes=7)).renew_due  # until it renews
        # another certificate reporting this party's instance id neither receives nor clears it
        assert not store.checkin(replace(ROW, serial="3c"), "j6a", NOW + timedelta(minutes=7)).renew_due
        assert not store.checkin(replace(ROW, serial="3d"), "j6b", NOW + timedelta(minutes=7),
                                 renewed_from="3c").renew_due
        assert store.checkin(ROW, "j6c", NOW + timedelta(minutes=7)).renew_due  # still pending for 1a
        # the renewal of 1a clears it
        assert not store.checkin(replace(ROW, serial="2b"), "j6", NOW + timedelta(minutes=8),
                                 renewed_from="1a").renew_due
        renewed = store.get(ROW.party)
        assert renewed is not None and renewed.renew_after is None and renewed.renew_serial is None
        assert [p.party for p in store.parties()] == [ROW.party]
    finally:
        db.close()
