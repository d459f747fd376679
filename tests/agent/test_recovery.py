"""One agent through a CA outage on a fake clock, against the real authority in-process:
it keeps its certificate, retries at most a minute apart, renews at its first attempt after
the CA answers again, and moves its next renewal earlier by as much as it was late. A
Retry-After from the CA sets the next attempt; an expired certificate renews when the CA
allows it; a renewal refused with ``bootstrapRequired`` waits for a new token."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import jwt

from trustyard.agent import metrics
from trustyard.agent.config import cert_spec
from trustyard.agent.runner import ManagedCert
from trustyard.agent.schedule import Level, Schedule
from trustyard.agent.seams import Current, FakeClock
from trustyard.ca.home import InitOptions, init_home, load_authority
from trustyard.cli.connect import issued_files
from trustyard.client import CAUnavailable, IssuedFiles, parse_retry_after
from trustyard.errors import Code, Forbidden
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

    def bundle_version(self) -> tuple[int | None, str | None]:
        return None, None

    def instance_id(self) -> str:
        return "memory"


@contextmanager
def one_agent(tmp_path: Path, name: str, seed: int,
              **settings: str) -> Iterator[tuple[ManagedCert, SwitchableCA, Memory, FakeClock]]:
    """One agent for ``name`` (1 h certificates) against a fresh CA, all on one fake clock;
    ``settings``: more of the certificate's agent settings (``token_file``)."""
    home = tmp_path / "ca"
    init_home(home, None, InitOptions(allow=("*.internal",)))
    authority = load_authority(home, None, minting=True)
    token = authority.mint_token("default", name, [name], ttl=timedelta(hours=2))
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    authority.clock = clock.now
    ca, out = SwitchableCA(authority), Memory()
    try:
        spec = cert_spec({"name": name, "out": str(tmp_path / "out"), "ttl": "1h", **settings})
        yield (ManagedCert(spec, ca, out, clock, rng=random.Random(seed), environ={"TRUSTYARD_TOKEN": token}),
               ca, out, clock)
    finally:
        authority.store.close()


def test_after_an_outage_the_agent_renews_within_a_minute_and_restores_the_rhythm(tmp_path: Path) -> None:
    with one_agent(tmp_path, "late.internal", seed=4) as (m, ca, _out, clock):
        m.start()
        m.step()
        assert m.current is not None and m.renew_point is not None
        first_serial = m.serial

        ca.up = False  # the outage starts before the renewal point and lasts 10 minutes
        clock.current = m.next_at
        missed = m.renew_point
        outage_ends = missed + timedelta(minutes=10)
        while clock.current < outage_ends:
            m.step()
            assert m.serial == first_serial and m.failures >= 1
            assert m.next_at - clock.current <= timedelta(minutes=1)  # retries at most a minute apart
            clock.current = max(m.next_at, clock.current)
        assert m.status().level is Level.WARNING and "renewal failing since" in m.status().message

        ca.up = True
        answered = outage_ends
        renewed_at = clock.current  # the first attempt after the CA answers renews: no further wait
        m.step()
        assert ca.renewals == 1 and m.serial != first_serial and m.failures == 0
        assert renewed_at - answered <= timedelta(minutes=1)
        assert m.current is not None and m.not_after is not None
        late_by = renewed_at - missed
        on_time = Schedule().plan(m.current.issued_at, m.not_after)
        assert on_time.earliest - late_by <= m.renew_point <= on_time.latest - late_by
        assert m.next_at == m.renew_point

        # The renewal after that is on time again: no further shift.
        clock.current = m.next_at
        m.step()
        assert ca.renewals == 2 and m.current is not None and m.not_after is not None
        again = Schedule().plan(m.current.issued_at, m.not_after)
        assert again.earliest <= m.renew_point <= again.latest


def test_a_retry_after_from_the_ca_sets_the_next_attempt(tmp_path: Path) -> None:
    """A 503 with Retry-After: 2 makes the next attempt come 2 to 3 seconds later (Retry-After
    plus jitter), not at the backoff's pick, and never earlier."""
    with one_agent(tmp_path, "busy.internal", seed=3) as (m, ca, _out, clock):
        m.start()
        m.step()
        first = m.serial
        renew = ca.renew
        shed: list[datetime] = []

        def busy(csr_pem: bytes, proof: str) -> IssuedFiles:
            shed.append(clock.now())
            raise CAUnavailable("the CA answered 503: the CA is busy", retry_after=2)

        ca.renew = busy  # type: ignore[method-assign]
        waits = []
        for _ in range(20):  # every refusal alike, however many failures came before
            clock.current = m.next_at
            m.step()
            waits.append(m.next_at - clock.current)
        assert len(shed) == 20 and m.serial == first
        assert all(timedelta(seconds=2) <= w <= timedelta(seconds=3) for w in waits)
        assert len(set(waits)) == 20  # jittered
        ca.renew = renew  # type: ignore[method-assign]
        clock.current = m.next_at
        m.step()
        assert m.serial != first and m.failures == 0


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


def test_an_expired_certificate_renews_when_the_ca_allows_it_and_else_needs_a_token(tmp_path: Path) -> None:
    """Back after its certificate expired, the agent asks for a renewal first: with
    ``allow_after_expiry`` the CA renews it; without, the CA's ``expired`` refusal makes the
    agent wait for a new bootstrap token."""
    with one_agent(tmp_path, "weekend.internal", seed=2) as (m, ca, _out, clock):
        m.start()
        m.step()
        first, not_after = m.serial, m.not_after
        assert not_after is not None
        clock.current = not_after + timedelta(minutes=30)
        ca.authority.renew_after_expiry = timedelta(hours=1)
        m.step()
        assert ca.renewals == 1 and m.serial != first and not m.needs_bootstrap and m.failures == 0
        assert m.status().level is Level.OK

        second, not_after = m.serial, m.not_after
        assert not_after is not None
        clock.current = not_after + timedelta(minutes=90)  # longer ago than allowed
        m.step()
        assert m.serial == second and m.needs_bootstrap and "[expired]" in (m.last_error or "")


def test_bootstrap_required_stops_renewal_reports_it_and_takes_a_new_token(tmp_path: Path) -> None:
    """A renewal refused with ``bootstrapRequired`` (403): the agent renews no more, says it
    needs a new bootstrap token in its status, metrics and check-in report, and bootstraps
    with the token the operator then puts in its token file."""
    token_file = tmp_path / "token"
    with one_agent(tmp_path, "replaced.internal", seed=6, token_file=str(token_file)) as (m, ca, _out, clock):
        first_token, second_token = (ca.authority.mint_token("default", "replaced.internal", ["replaced.internal"],
                                                             ttl=timedelta(hours=2)) for _ in range(2))
        token_file.write_text(first_token)
        m.start()
        m.step()
        first = m.serial
        refused: list[str] = []

        def replaced(csr_pem: bytes, proof: str) -> IssuedFiles:
            refused.append(proof)
            raise Forbidden("the CA's intermediate was replaced in an emergency: bootstrap again",
                            code=Code.BOOTSTRAP_REQUIRED)

        ca.renew = replaced  # type: ignore[method-assign]
        clock.current = m.next_at
        m.step()
        assert len(refused) == 1 and m.needs_bootstrap and m.refusal is None and m.serial == first
        assert "[bootstrapRequired]" in (m.last_error or "") and str(token_file) in (m.last_error or "")
        assert m.status().level is Level.ERROR and m.report()["needs_bootstrap"] is True
        text = metrics.render(SimpleNamespace(managed=[m], clock=clock))  # type: ignore[arg-type]
        assert 'trustyard_agent_needs_bootstrap{name="replaced.internal"} 1' in text
        proof = m.checkin_proof(timedelta(minutes=1))
        assert proof is not None
        report = jwt.decode(proof, options={"verify_signature": False})["report"]
        assert "[bootstrapRequired]" in report["last_error"] and report["failures"] >= 1

        for _ in range(5):  # the spent token is still in the file: no renewal, no bootstrap
            clock.current = m.next_at
            m.step()
        assert len(refused) == 1 and m.needs_bootstrap and m.serial == first

        token_file.write_text(second_token)  # the operator delivers a new one
        clock.current = m.next_at
        m.step()
        assert not m.needs_bootstrap and m.serial != first and m.counters.bootstraps == 2
        assert m.status().level is Level.OK


def test_an_absurd_retry_after_neither_crashes_the_agent_nor_outlasts_its_certificate(tmp_path: Path) -> None:
    """Retry-After values past a day (400 digits, an HTTP date years ahead) are not obeyed, and
    even an obeyed one never holds the next attempt past a quarter of the time left."""
    assert parse_retry_after("9" * 400) is None
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") is None
    assert parse_retry_after("86401") is None and parse_retry_after("120") == 120.0
    with one_agent(tmp_path, "slow.internal", seed=5) as (m, ca, _out, clock):
        m.start()
        m.step()

        def busy(csr_pem: bytes, proof: str) -> IssuedFiles:
            raise CAUnavailable("the CA answered 503", retry_after=86400)

        ca.renew = busy  # type: ignore[method-assign]
        clock.current = m.next_at
        m.step()
        assert m.not_after is not None
        assert m.next_at - clock.current <= max((m.not_after - clock.current) / 4, timedelta(seconds=1))
