"""The rotation journal on a fake clock, a fake fleet and an in-memory bundle: each state's gate,
the refusals that name why, ``--force`` on the adoption gate only, rollback until active."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from trustyard.ca.rotation import Journal, Made, Party, RotationSettings
from trustyard.ca.rotation_seams import MemoryFleet
from trustyard.errors import Code, ExitCode, RotationRefused
from trustyard.store import open_store
from trustyard.store.rotations import RotationStore
from trustyard.testing import TestCA
from trustyard.x509.summary import fingerprint_sha256

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = RotationSettings(checkin_interval=timedelta(minutes=10), dwell=timedelta(minutes=20),
                            renew_window=timedelta(minutes=30), stall=timedelta(days=1))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class Bundle:
    def __init__(self) -> None:
        self.certs: list[x509.Certificate] = []
        self.v = 7

    def version(self) -> int:
        return self.v

    def publish(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        self.certs += [c for c in certs if c not in self.certs]
        self.v += 1
        return self.v

    def withdraw(self, certs: Sequence[x509.Certificate], reason: str) -> int:
        self.certs = [c for c in self.certs if c not in certs]
        self.v += 1
        return self.v


class Maker:
    """Material from two test CAs: the old one and the next."""

    def __init__(self) -> None:
        self.old, self.new = TestCA(), TestCA()
        self.discarded: list[dict[str, str]] = []

    def current(self) -> tuple[x509.Certificate, x509.Certificate]:
        return self.old.cert, self.old.root

    def make(self, kind: str, rotation_id: int, now: datetime) -> Made:
        return self.load({"n": str(rotation_id), "kind": kind})

    def load(self, paths: dict[str, str]) -> Made:
        root = paths.get("kind") == "root"
        return Made(paths, self.new.cert, self.new.cert if root else None, self.new.cert if root else None,
                    self.old.cert, self.old.root)

    def discard(self, paths: dict[str, str]) -> None:
        self.discarded.append(paths)


@pytest.fixture
def world():  # type: ignore[no-untyped-def]
    store = open_store("sqlite://")
    clock, fleet, bundle, maker = Clock(), MemoryFleet(stale_after=timedelta(minutes=30)), Bundle(), Maker()
    vouched: dict[str, int] = {}
    journal = Journal(RotationStore(store), fleet, bundle, maker, lambda fp, now: vouched.get(fp, 0), SETTINGS, clock)
    yield journal, clock, fleet, bundle, maker, vouched, store
    store.close()


def audit_actions(store) -> list[tuple[str, str, dict]]:  # type: ignore[no-untyped-def]
    return [(e.action, e.actor, e.detail) for e in store.audit_entries()]


def refused(call, *args, **kwargs) -> RotationRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(RotationRefused) as info:
        call(*args, **kwargs)
    assert info.value.exit_code == ExitCode.GATE_CLOSED
    return info.value


def test_an_intermediate_moves_through_every_state_only_when_each_gate_holds(world) -> None:  # type: ignore[no-untyped-def]
    journal, clock, fleet, bundle, maker, vouched, store = world
    fleet.check_in("web-1", T0, 7)
    fleet.check_in("db-1", T0, 7)
    r = journal.prepare("intermediate", "alice", "yearly")
    assert r.state == "prepared" and r.at("prepared") == T0
    assert r.old_intermediate_sha256 == fingerprint_sha256(maker.current()[0])

    r = journal.advance("alice", "publish it")
    assert r.state == "published" and r.bundle_version == 8 and maker.new.cert in bundle.certs

    # Adoption: the dwell first, then the laggards by name with their last check-in.
    why = refused(journal.advance, "alice", "too soon").detail
    assert "dwell runs until 2030-01-01T00:20:00Z" in why and "2 of 2 relying parties lack bundle version 8" in why
    clock.tick(minutes=21)
    fleet.check_in("web-1", clock.now, 8)
    why = refused(journal.advance, "alice", "still one").detail
    assert "dwell" not in why and "1 of 2" in why and "db-1 (bundle 7, last check-in 2030-01-01T00:00:00Z)" in why
    gate = journal.gate(journal.current())
    assert (gate.covered, gate.relying, [p.name for p in gate.laggards]) == (1, 2, ["db-1"])

    # A party silent for more than three intervals is stale and no longer gates.
    clock.tick(minutes=10)
    fleet.check_in("web-1", clock.now, 8)
    r = journal.advance("alice", "db-1 went quiet")
    assert r.state == "adopted" and r.forced_laggards == ()

    r = journal.advance("alice", "switch")
    assert r.state == "active"
    assert fleet.renewals == [(f"issuer:{r.old_intermediate_sha256}", timedelta(minutes=30))]

    assert "renew-now window runs until" in refused(journal.advance, "alice", "too soon").detail
    clock.tick(minutes=31)
    vouched[r.old_intermediate_sha256] = 3
    r = journal.advance("alice", "window over")
    assert r.state == "retiring"
    assert journal.gate(r).still_vouched == 3
    assert "3 unexpired certificate(s) signed by the old intermediate" in refused(journal.advance, "a", "b").detail
    assert "--force overrides only the adoption gate" in refused(journal.advance, "a", "b", force=True).detail
    vouched[r.old_intermediate_sha256] = 0
    r = journal.advance("alice", "all replaced")
    assert r.state == "retired" and journal.current() is None
    assert [r.at(s) is not None for s in ("prepared", "published", "adopted", "active", "retiring", "retired")] \
        == [True] * 6

    actions = [(a, who) for a, who, _ in audit_actions(store) if a.startswith("rotation.")]
    assert actions == [("rotation.start", "alice"), ("rotation.prepared", "alice"), ("rotation.published", "alice"),
                       ("rotation.adopted", "alice"), ("rotation.active", "alice"), ("rotation.renew-now", "alice"),
                       ("rotation.retiring", "alice"), ("rotation.retired", "alice")]
    whys = {a: d.get("why") for a, _, d in audit_actions(store)}
    assert whys["rotation.adopted"] == "db-1 went quiet" and whys["rotation.retired"] == "all replaced"


def test_force_overrides_the_adoption_gate_and_the_audit_entry_lists_the_laggards(world) -> None:  # type: ignore[no-untyped-def]
    journal, _clock, fleet, _bundle, _maker, _vouched, store = world
    fleet.check_in("api-7", T0, 3)
    journal.prepare("intermediate", "bob", "test")
    journal.advance("bob", "publish")
    r = journal.advance("bob", "api-7 is being decommissioned", force=True)
    assert r.state == "adopted" and r.forced_laggards == ("api-7",)
    entry = next(d for a, _, d in audit_actions(store) if a == "rotation.adopted")
    assert entry["forced"] is True and entry["why"] == "api-7 is being decommissioned"
    assert entry["laggards"] == [{"name": "api-7", "last_checkin": "2030-01-01T00:00:00Z", "bundle_version": 3}]
    assert any("dwell" in reason for reason in entry["refused_because"])


def test_rollback_works_until_active_and_withdraws_what_was_published(world) -> None:  # type: ignore[no-untyped-def]
    journal, clock, _fleet, bundle, maker, _vouched, _store = world
    journal.prepare("root", "carol", "test")
    journal.advance("carol", "publish")
    assert maker.new.cert in bundle.certs
    r = journal.rollback("carol", "wrong key type")
    assert r.state == "rolled_back" and maker.new.cert not in bundle.certs and maker.discarded
    assert journal.current() is None

    journal.prepare("intermediate", "carol", "again")
    journal.advance("carol", "publish")
    clock.tick(minutes=21)
    journal.advance("carol", "adopt")
    journal.advance("carol", "activate")
    why = refused(journal.rollback, "carol", "too late").detail
    assert "rollback works only until active" in why
    assert journal.current().state == "active"


def test_one_rotation_at_a_time_and_nothing_to_advance_without_one(world) -> None:  # type: ignore[no-untyped-def]
    journal, *_ = world
    assert refused(journal.advance, "dave", "nothing").code == Code.NO_ROTATION
    journal.prepare("intermediate", "dave", "first")
    assert "rotation 1 (intermediate) is prepared" in refused(journal.prepare, "root", "dave", "second").detail


def test_the_dwell_is_at_least_two_check_in_intervals() -> None:
    with pytest.raises(Exception, match="less than two check-in intervals"):
        RotationSettings(checkin_interval=timedelta(hours=1), dwell=timedelta(minutes=90)).checked()


def test_a_party_without_any_bundle_version_lags() -> None:
    fleet = MemoryFleet([Party("new-host", T0, None, False)])
    assert fleet.parties(T0 + timedelta(hours=1))[0].stale is False
    assert fleet.parties(T0 + timedelta(hours=4))[0].stale is True


def test_status_shows_coverage_each_laggard_and_what_the_next_advance_needs(world) -> None:  # type: ignore[no-untyped-def]
    from trustyard.cli.rotate_cmds import status_text

    journal, clock, fleet, *_ = world
    fleet.check_in("web-1", T0, 8)
    fleet.check_in("db-1", T0, 7)
    journal.prepare("intermediate", "erin", "test")
    assert "next: published -- ready: trustyard rotate advance" in status_text(journal.status())
    journal.advance("erin", "publish")
    clock.tick(minutes=25)
    text = status_text(journal.status())
    assert "rotation 1 (intermediate): published since 2030-01-01T00:00:00Z" in text
    assert "coverage: 1 of 2 relying parties have bundle version 8" in text
    assert "laggard: db-1  last check-in 2030-01-01T00:00:00Z  bundle 7" in text
    assert "next: adopted -- waiting: 1 of 2 relying parties lack bundle version 8" in text
    assert "(--force overrides)" in text
    doc = journal.status().to_json()
    assert doc["gate"]["coverage"] == {"covered": 1, "relying": 2}
    assert doc["gate"]["laggards"] == [{"name": "db-1", "last_checkin": "2030-01-01T00:00:00Z", "bundle_version": 7}]


def test_material_that_cannot_be_made_ends_the_rotation_recorded_and_frees_the_journal(world) -> None:  # type: ignore[no-untyped-def]
    journal, _clock, _fleet, _bundle, maker, _vouched, store = world

    def no_root_key(kind: str, rotation_id: int, now: datetime) -> Made:
        raise RuntimeError("cannot read key ca/root.key: No such file or directory")

    maker.make = no_root_key
    with pytest.raises(RuntimeError):
        journal.prepare("intermediate", "frank", "try")
    assert journal.current() is None and journal.store.get(1).state == "rolled_back"
    entry = next(d for a, _, d in audit_actions(store) if a == "rotation.rolled_back")
    assert entry["from"] == "preparing" and "ca/root.key" in entry["failed"]


@pytest.mark.parametrize(("table", "complaint"), [
    ('checkin_interval = "1h"\ndwell = "90m"', "less than two check-in intervals"),
    ('renew_window = "soon"', "[rotation] renew_window"),
    ("auto = 1", "[rotation] auto must be true or false"),
    ('spare = "x"', "unknown key(s) in [rotation]: spare"),
])
def test_rotation_settings_are_checked_when_the_configuration_loads(tmp_path, table: str, complaint: str) -> None:  # type: ignore[no-untyped-def]
    from trustyard.ca.config import load_config
    from trustyard.errors import ConfigError

    (tmp_path / "trustyard.toml").write_text(f"[rotation]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert complaint in info.value.detail


def test_retiring_a_root_asks_every_party_to_renew_again_without_the_cross_certificate(world) -> None:  # type: ignore[no-untyped-def]
    journal, clock, fleet, bundle, maker, _vouched, store = world
    r = journal.prepare("root", "grace", "new root")
    for why in ("publish", "adopt"):
        journal.advance("grace", why)
        clock.tick(minutes=21)
    journal.advance("grace", "switch")
    assert fleet.renewals == [(f"issuer:{r.old_intermediate_sha256}", timedelta(minutes=30))]
    clock.tick(minutes=31)
    journal.advance("grace", "window over")
    r = journal.advance("grace", "all replaced")
    assert r.state == "retired" and maker.old.root not in bundle.certs
    # The leaves of the new intermediate were issued with the cross-certificate: renewed now.
    assert fleet.renewals[1:] == [(f"issuer:{r.new_intermediate_sha256}", timedelta(minutes=30))]
    asks = [d for a, _, d in audit_actions(store) if a == "rotation.renew-now"]
    assert [d["selector"] for d in asks] == [f"issuer:{r.old_intermediate_sha256}",
                                             f"issuer:{r.new_intermediate_sha256}"]


def test_an_intermediate_rotation_asks_for_renewals_only_at_active(world) -> None:  # type: ignore[no-untyped-def]
    journal, clock, fleet, *_ = world
    journal.prepare("intermediate", "heidi", "yearly")
    for why in ("publish", "adopt", "switch"):
        journal.advance("heidi", why)
        clock.tick(minutes=31)
    journal.advance("heidi", "window over")
    assert journal.advance("heidi", "all replaced").state == "retired"
    assert len(fleet.renewals) == 1


def test_renewal_requests_start_after_the_workers_poll_interval() -> None:
    """A worker sees a switched signer only at its next poll: the first renew-now is due after it."""
    from dataclasses import replace

    from trustyard.ca.rotation_seams import FleetParties
    from trustyard.store.fleet_store import CheckinRow, FleetStore

    class Vouched:  # every party's serial was signed by the issuer asked about
        def vouched_serials(self, issuer: str, now: datetime, legacy: object) -> set[str]:
            return {"a0", "a1", "a2"}

    db = open_store("sqlite://")
    try:
        row = CheckinRow(party="", identity="", instance="01", kind="agent", serial="",
                         not_after=T0 + timedelta(hours=1),
                         bundle_version=3, bundle_sha256=None, endpoint_serial=None, failures=0, last_error=None,
                         agent_version="0.1.0", interval_seconds=2)
        for i in range(3):
            FleetStore(db).checkin(replace(row, party=f"p{i}", identity=f"p{i}", serial=f"a{i}"), f"j{i}", T0)
        fleet = FleetParties(db, Vouched(), clock=lambda: T0, lead=timedelta(seconds=5))  # type: ignore[arg-type]
        assert fleet.request_renewal("issuer:ab", timedelta(seconds=30)) == 3
        due = sorted(p.renew_after for p in FleetStore(db).parties() if p.renew_after is not None)
        assert due == [T0 + timedelta(seconds=5 + 10 * i) for i in range(3)]
    finally:
        db.close()
