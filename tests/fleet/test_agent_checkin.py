"""The agent's check-in on a fake clock against the real authority in-process: a check-in that
fails is logged and retried at the next interval and never stops renewals; the interval is
jittered by +-10%; `--checkin` is in the agent's help."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from trustyard.agent.config import AgentConfig, cert_spec
from trustyard.agent.runner import Agent, ManagedCert
from trustyard.agent.seams import FakeClock
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.client import CAUnavailable, IssuedFiles, TrustBundle

from ..agent.test_recovery import Memory, SwitchableCA


class CheckinDown(SwitchableCA):
    """Issues and renews; every check-in fails."""

    def __init__(self, authority: Any) -> None:
        super().__init__(authority)
        self.checkins: list[datetime] = []
        self.clock: FakeClock | None = None

    def checkin(self, proof: str) -> dict[str, Any]:
        assert self.clock is not None
        self.checkins.append(self.clock.now())
        raise CAUnavailable("cannot reach the CA (check-ins down)")


class Kept(Memory):
    def bundle_version(self) -> tuple[int | None, str | None]:
        return None, None

    def instance_id(self) -> str:
        return "memory01"


class Until(FakeClock):
    def __init__(self, start: datetime, end: datetime) -> None:
        super().__init__(start)
        self.end = end

    def sleep(self, seconds: float) -> bool:
        return super().sleep(seconds) and self.current < self.end


def test_failing_checkins_are_retried_each_interval_and_never_stop_renewals(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "ca"
    init_home(home, None, InitOptions(allow=("*.internal",)))
    authority = load_authority(home, None, minting=True)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = Until(start, start + timedelta(hours=2))
    authority.clock = clock.now
    try:
        ca = CheckinDown(authority)
        ca.clock = clock
        token = authority.mint_token("default", "q.internal", ["q.internal"], ttl=timedelta(hours=1))
        spec = cert_spec({"name": "q.internal", "out": str(tmp_path / "out"), "ttl": "1h"})
        managed = ManagedCert(spec, ca, Kept(), clock, rng=random.Random(1), environ={"TRUSTYARD_TOKEN": token})
        config = AgentConfig(ca_url="https://unused", root=tmp_path / "root.crt", certificates=(spec,),
                             checkin_interval=timedelta(seconds=60))
        with caplog.at_level(logging.WARNING, logger="trustyard.agent"):
            Agent(config, ca, [managed], clock, rng=random.Random(2)).run()
    finally:
        authority.store.close()
    assert ca.renewals >= 2  # a 1h certificate, renewed about every 40 minutes for 2 hours
    gaps = [(b - a).total_seconds() for a, b in zip(ca.checkins, ca.checkins[1:], strict=False)]
    assert len(ca.checkins) >= 100 and max(gaps) <= 66  # never longer than the interval + 10%
    regular = [g for g in gaps if 54 <= g <= 66]  # the others: a renewal checks in at once
    assert len(regular) >= 0.9 * len(gaps), sorted(gaps)[:10]
    assert len({round(g) for g in regular}) > 5  # jittered, not a fixed beat
    assert "check-in failed: cannot reach the CA (check-ins down)" in caplog.text


class NewBundle(SwitchableCA):
    """Serves bundle version 2; tells every check-in that reports another one to refresh."""

    def __init__(self, authority: Any) -> None:
        super().__init__(authority)
        self.bundle = TrustBundle(authority.roots_pem, version=2)
        self.reported: list[tuple[datetime, int | None]] = []
        self.clock: FakeClock | None = None

    def roots(self, etag: str | None) -> TrustBundle | None:
        return self.bundle

    def checkin(self, proof: str) -> dict[str, Any]:
        assert self.clock is not None
        version = jwt.decode(proof, options={"verify_signature": False})["report"]["bundle_version"]
        self.reported.append((self.clock.now(), version))
        return {"accepted": True, "directives": [] if version == 2 else [{"name": "refresh-bundle"}]}


class BundleKept(Kept):
    """Keeps the trust bundle written, and reports its version."""

    def __init__(self) -> None:
        super().__init__()
        self.bundle: TrustBundle | None = None

    def write(self, issued: IssuedFiles, key: Any) -> None:
        super().write(issued, key)
        self.bundle = TrustBundle(issued.roots_pem, version=1)

    def has_bundle(self, bundle: object) -> bool:
        return bundle == self.bundle

    def write_ca(self, bundle: Any) -> None:
        self.bundle = bundle

    def bundle_version(self) -> tuple[int | None, str | None]:
        return (self.bundle.version, self.bundle.sha256) if self.bundle else (None, None)


def test_a_bundle_fetched_on_refresh_bundle_is_reported_at_once_not_an_interval_later(tmp_path: Path) -> None:
    """Told ``refresh-bundle``, the agent fetches the bundle and checks in again in the same
    pass, reporting the new version: the CA sees adoption right away (a rotation's adoption
    gate waits on it), not one check-in interval later."""
    home = tmp_path / "ca"
    init_home(home, None, InitOptions(allow=("*.internal",)))
    authority = load_authority(home, None, minting=True)
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    try:
        ca = NewBundle(authority)
        ca.clock = clock
        token = authority.mint_token("default", "b.internal", ["b.internal"], ttl=timedelta(hours=1))
        spec = cert_spec({"name": "b.internal", "out": str(tmp_path / "out"), "ttl": "1h"})
        output = BundleKept()
        managed = ManagedCert(spec, ca, output, clock, rng=random.Random(1), environ={"TRUSTYARD_TOKEN": token})
        config = AgentConfig(ca_url="https://unused", root=tmp_path / "root.crt", certificates=(spec,),
                             roots_interval=timedelta(hours=1), checkin_interval=timedelta(seconds=60))
        agent = Agent(config, ca, [managed], clock, rng=random.Random(2))
        agent.start()
        agent.roots_next = clock.now() + timedelta(hours=1)  # only the directive fetches the bundle
        wake = agent.tick()
    finally:
        authority.store.close()
    assert ca.reported == [(clock.now(), 1), (clock.now(), 2)]
    assert wake is not None and wake >= clock.now() + Agent.MAX_NAP  # then nothing until the next wake


def test_the_agent_help_names_the_checkin_interval() -> None:
    done = subprocess.run([sys.executable, "-m", "trustyard", "agent", "--help"], capture_output=True, text=True)
    assert "--checkin" in done.stdout and "renew-now" in done.stdout and "retry-after" in done.stdout
