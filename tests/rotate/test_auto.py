"""``[rotation] auto = true``: the serve process's autopilot prepares a new intermediate at 2/3
of the current one's life and advances it through the same gates by itself (a short-lived
intermediate and a fake clock); the server certificate is renewed on the same tick when due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from trustyard.ca.config import load_config
from trustyard.ca.home import InitOptions, init_home, open_home_store
from trustyard.ca.rotation_watch import Autopilot

from ..support import PASSWORD


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_auto_rotation_prepares_at_two_thirds_and_advances_only_through_the_gates(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(intermediate_ttl="3h"))
    with (home / "trustyard.toml").open("a") as toml:
        toml.write('\n[rotation]\nauto = true\ncheckin_interval = "1m"\nrenew_window = "10m"\n')
    config = load_config(home)
    assert config.rotation.auto and config.rotation.settings().dwell == timedelta(minutes=2)
    store = open_home_store(config, migrate=False)
    clock = Clock()
    pilot = Autopilot(config, PASSWORD, store, clock=clock)
    journal = pilot.journal
    try:
        pilot.tick()
        assert journal.status().rotation is None  # a third of its life: nothing to do
        clock.now += timedelta(hours=1, minutes=50)
        pilot.tick()
        assert journal.status().rotation is None  # not yet 2/3
        server_serial = (home / "server" / "tls.crt").read_bytes()
        clock.now += timedelta(minutes=15)
        states = []
        for _ in range(3):
            pilot.tick()
            states.append(journal.current().state)
        # prepared, then published, then held by the dwell
        assert states == ["prepared", "published", "published"]
        assert (home / "server" / "tls.crt").read_bytes() != server_serial  # due at 2/3 too: renewed
        clock.now += timedelta(minutes=3)
        pilot.tick()
        pilot.tick()
        assert journal.current().state == "active"
        pilot.tick()
        assert journal.current().state == "active"  # the renew-now window
        clock.now += timedelta(minutes=11)
        pilot.tick()
        pilot.tick()
        assert journal.current() is None and journal.status().rotation.state == "retired"
        actors = {e.actor for e in store.audit_entries() if e.action.startswith("rotation.")}
        assert actors == {"auto"}
        pilot.tick()
        assert len(journal.store.all()) == 1  # the new intermediate is young: no second rotation
    finally:
        store.close()


def test_a_failed_automatic_prepare_is_recorded_once_and_retried_an_hour_later(tmp_path: Path) -> None:
    home = tmp_path / "ca"
    init_home(home, PASSWORD, InitOptions(intermediate_ttl="3h"))
    with (home / "trustyard.toml").open("a") as toml:
        toml.write('\n[rotation]\nauto = true\nserver_cert_renewal = false\n')
    (home / "ca" / "root.key").rename(tmp_path / "root.key.offline")
    config = load_config(home)
    store = open_home_store(config, migrate=False)
    clock = Clock()
    pilot = Autopilot(config, PASSWORD, store, clock=clock)
    try:
        clock.now += timedelta(hours=2, minutes=5)
        for _ in range(5):
            pilot.tick()
        rows = pilot.journal.store.all()
        assert [r.state for r in rows] == ["rolled_back"]
        (tmp_path / "root.key.offline").rename(home / "ca" / "root.key")
        clock.now += timedelta(minutes=30)
        pilot.tick()
        assert len(pilot.journal.store.all()) == 1  # still backing off
        clock.now += timedelta(minutes=31)
        pilot.tick()
        assert pilot.journal.current().state == "prepared"
    finally:
        store.close()
