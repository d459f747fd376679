"""One agent through a CA outage on a fake clock, against the real authority in-process:
it keeps its certificate, and once the CA answers again it schedules the renewal at the
recovery point (status OK, saying when), renews there, and moves its next renewal earlier by
as much as it was late."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trustyard.agent.config import cert_spec
from trustyard.agent.runner import ManagedCert
from trustyard.agent.schedule import RECOVERY_MARGIN, Level, Schedule
from trustyard.agent.seams import Current, FakeClock
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.cli.connect import issued_files
from trustyard.client import CAUnavailable, IssuedFiles
from trustyard.units import format_time
from trustyard.x509.keys import PrivateKey


class SwitchableCA:
    """The authority behind the agent's backend interface, with an on/off switch."""

    def __init__(self, authority) -> None:  # type: ignore[no-untyped-def]
        self.authority, self.up, self.renewals = authority, True, 0

    def _check(self) -> None:
        if not self.up:
            raise CAUnavailable("cannot reach the CA (test outage)")

    def sign(self, csr_pem: bytes, token: str, ttl: timedelta | None) -> IssuedFiles:
        self._check()
        return issued_files(self.authority.issue_for_token(csr_pem, token, ttl))

    def renew(self, csr_pem: bytes, proof: str) -> IssuedFiles:
        self._check()
        self.renewals += 1
        return issued_files(self.authority.renew(csr_pem, proof))

    def roots(self, etag: str | None) -> tuple[str, str | None] | None:
        self._check()
        return None


class Memory:
    def __init__(self) -> None:
        self.writes = 0

    def describe(self) -> str:
        return "memory"

    def load(self) -> Current | None:
        return None

    def write(self, issued: IssuedFiles, key: PrivateKey) -> None:
        self.writes += 1

    def read_ca(self) -> str | None:
        return None

    def has_bundle(self, bundle: object) -> bool:
        return True

    def write_ca(self, pem: str) -> None:
        pass


@contextmanager
def one_agent(tmp_path: Path, name: str, seed: int) -> Iterator[tuple[ManagedCert, SwitchableCA, Memory, FakeClock]]:
    """One agent for ``name`` (1 h certificates) against a fresh CA, all on one fake clock."""
    home = tmp_path / "ca"
    init_home(home, None, InitOptions(allow=("*.internal",)))
    authority = load_authority(home, None, minting=True)
    token = authority.mint_token("default", name, [name], ttl=timedelta(hours=2))
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    authority.clock = clock.now
    ca, out = SwitchableCA(authority), Memory()
    try:
        yield (ManagedCert(cert_spec({"name": name, "out": str(tmp_path / "out"), "ttl": "1h"}), ca, out, clock,
                           rng=random.Random(seed), environ={"TRUSTYARD_TOKEN": token}), ca, out, clock)
    finally:
        authority.store.close()


def test_outage_recovery_spreads_the_renewal_and_restores_the_rhythm(tmp_path: Path) -> None:
    with one_agent(tmp_path, "late.internal", seed=4) as (m, ca, out, clock):
        m.start()
        m.step()
        assert out.writes == 1 and m.current is not None and m.renew_point is not None
        first_serial, not_after, issued_at = m.serial, m.not_after, m.current.issued_at
        assert not_after is not None
        lifetime = not_after - issued_at

        ca.up = False  # the outage starts before the renewal point and lasts 10 minutes
        clock.current = m.next_at
        missed = m.renew_point
        outage_ends = missed + timedelta(minutes=10)
        while clock.current < outage_ends:
            m.step()
            assert m.serial == first_serial and m.failures >= 1
            clock.current = max(m.next_at, clock.current)
        assert m.status().level is Level.WARNING and "renewal failing since" in m.status().message

        ca.up = True
        m.step()  # the probe: the CA answers, the renewal is scheduled, nothing issued yet
        assert m.serial == first_serial and ca.renewals == 0
        planned = m.next_at
        room = not_after - clock.current - lifetime * RECOVERY_MARGIN
        assert clock.current + room * 0.9 <= planned <= clock.current + room
        status = m.status()
        assert status.level is Level.OK and "the CA answers again" in status.message
        assert format_time(planned) in status.message

        clock.current = planned
        m.step()
        assert ca.renewals == 1 and m.serial != first_serial and m.failures == 0
        assert m.current is not None and m.not_after is not None
        late_by = planned - missed
        on_time = Schedule().plan(m.current.issued_at, m.not_after)
        assert on_time.earliest - late_by <= m.renew_point <= on_time.latest - late_by
        assert m.next_at == m.renew_point

        # The renewal after that is on time again: no further shift.
        clock.current = m.next_at
        m.step()
        assert ca.renewals == 2 and m.current is not None and m.not_after is not None
        again = Schedule().plan(m.current.issued_at, m.not_after)
        assert again.earliest <= m.renew_point <= again.latest


def test_recovery_is_never_put_off_again_and_warns_close_to_expiry(tmp_path: Path) -> None:
    """The CA answers with 5 minutes left (less than error_before, 10% of an hour): the
    renewal is planned within the time left short of the margin, and the status is a warning
    that says when. The CA fails again at that moment: once it answers, the agent renews at
    once instead of planning another wait."""
    with one_agent(tmp_path, "flaky.internal", seed=9) as (m, ca, _out, clock):
        m.start()
        m.step()
        assert m.not_after is not None and m.current is not None
        first, not_after, lifetime = m.serial, m.not_after, m.not_after - m.current.issued_at
        ca.up = False
        clock.current = m.next_at
        while clock.current < not_after - timedelta(minutes=5):
            m.step()
            clock.current = min(max(m.next_at, clock.current), not_after - timedelta(minutes=5))
        ca.up = True
        m.step()  # the probe, with 5 minutes left
        planned = m.next_at
        assert clock.current < planned <= not_after - lifetime * RECOVERY_MARGIN and m.serial == first
        status = m.status()
        assert status.level is Level.WARNING and format_time(planned) in status.message

        ca.up = False  # down again exactly when the renewal was planned
        clock.current = planned
        m.step()
        assert m.failures >= 1 and m.serial == first
        ca.up = True
        clock.current = m.next_at
        m.step()  # the probe: the planned point has passed, so no new wait
        assert m.next_at == clock.current
        m.step()
        assert ca.renewals == 1 and m.serial != first


def test_a_renewal_whose_answer_was_lost_is_retried_with_the_same_key(tmp_path: Path) -> None:
    """A certificate renews once, so the agent retries a renewal whose answer it
    lost with the same key and CSR; the CA answers with the certificate it already issued."""
    with one_agent(tmp_path, "lost.internal", seed=1) as (m, ca, _out, clock):
        m.start()
        m.step()
        first_serial = m.serial
        lost: list[IssuedFiles] = []
        renew = ca.renew

        def renew_then_drop_the_answer(csr_pem: bytes, proof: str) -> IssuedFiles:
            lost.append(renew(csr_pem, proof))
            raise CAUnavailable("the connection broke before the answer arrived", maybe_delivered=True)

        ca.renew = renew_then_drop_the_answer  # type: ignore[method-assign]
        clock.current = m.next_at
        m.step()
        assert len(lost) == 1 and m.serial == first_serial and m.failures == 1
        ca.renew = renew  # type: ignore[method-assign]
        for _ in range(3):  # a probe first (the CA answers again), then the renewal at its point
            clock.current = max(m.next_at, clock.current)
            m.step()
            if m.serial != first_serial:
                break
        assert m.failures == 0 and m.serial is not None and format(m.serial, "x") == lost[0].serial
        assert len(ca.authority.store.list()) == 2  # the bootstrap and one renewal, nothing signed twice
