"""The pure schedule: renewal point, jitter, outage budget, backoff, retries after an outage
and after a Retry-After, alert levels."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from trustyard.agent.schedule import RETRY_CAP, Backoff, Level, Schedule, assess
from trustyard.client import retry_delay
from trustyard.units import Threshold

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class TestRenewalPoint:
    def test_default_is_two_thirds_with_ten_percent_jitter_of_the_interval(self) -> None:
        plan = Schedule().plan(T0, T0 + HOUR)
        assert plan.nominal == T0 + HOUR * 0.66
        assert plan.earliest == T0 + HOUR * 0.66 * 0.9
        assert plan.latest == T0 + HOUR * 0.66 * 1.1
        rng = random.Random(1)
        picks = [plan.pick(rng) for _ in range(2000)]
        assert min(picks) >= plan.earliest and max(picks) <= plan.latest
        # spread over the whole window, not clumped at the nominal point
        assert min(picks) < plan.earliest + timedelta(minutes=1) and max(picks) > plan.latest - timedelta(minutes=1)

    def test_configurable_share_and_jitter(self) -> None:
        plan = Schedule(renew_at=Threshold.parse("50%"), jitter=0.0).plan(T0, T0 + HOUR)
        assert plan.earliest == plan.latest == plan.nominal == T0 + HOUR / 2

    def test_a_duration_means_time_left_before_expiry(self) -> None:
        plan = Schedule(renew_at=Threshold.parse("8h"), jitter=0.0).plan(T0, T0 + 24 * HOUR)
        assert plan.nominal == T0 + 16 * HOUR

    def test_lifetime_counts_from_issuance_not_the_backdated_not_before(self) -> None:
        # The CA backdates notBefore by a minute; the agent passes when the cert arrived.
        plan = Schedule(jitter=0.0, renew_at=Threshold.parse("50%")).plan(T0, T0 + timedelta(seconds=60))
        assert plan.nominal == T0 + timedelta(seconds=30)

    def test_outage_budget_moves_the_point_earlier_so_the_cert_survives(self) -> None:
        budget = timedelta(hours=10)  # 66% of 24h leaves 8h: not enough
        plan = Schedule(outage_budget=budget).plan(T0, T0 + 24 * HOUR)
        assert plan.warning is None
        assert plan.latest + budget <= T0 + 24 * HOUR
        assert plan.latest <= T0 + 24 * HOUR - budget * 1.1
        assert plan.nominal < T0 + 24 * HOUR * 0.66

    def test_outage_budget_already_met_changes_nothing(self) -> None:
        assert Schedule(outage_budget=HOUR).plan(T0, T0 + 24 * HOUR).nominal == T0 + 24 * HOUR * 0.66

    def test_outage_budget_longer_than_the_lifetime_warns(self) -> None:
        plan = Schedule(outage_budget=4 * HOUR).plan(T0, T0 + HOUR)
        assert plan.warning is not None and "cannot survive a 4h 0m CA outage" in plan.warning
        assert plan.nominal == T0 + HOUR * 0.10

    def test_a_late_renewal_moves_the_next_window_earlier_by_the_lateness(self) -> None:
        on_time = Schedule().plan(T0, T0 + HOUR)
        late = Schedule().plan(T0, T0 + HOUR, late_by=timedelta(minutes=12))
        assert late.nominal == on_time.nominal - timedelta(minutes=12)
        assert (late.earliest, late.latest) == (on_time.earliest - timedelta(minutes=12),
                                                on_time.latest - timedelta(minutes=12))
        # but never before 10% of the lifetime
        very_late = Schedule().plan(T0, T0 + HOUR, late_by=timedelta(minutes=50))
        assert very_late.earliest == very_late.nominal == very_late.latest == T0 + HOUR * 0.10

    def test_bad_jitter_is_refused(self) -> None:
        with pytest.raises(ValueError):
            Schedule(jitter=1.5)


class TestAfterAnOutage:
    def test_the_default_retry_cap_is_one_minute(self) -> None:
        assert Backoff().cap == timedelta(minutes=1)
        assert Backoff().cap is RETRY_CAP
        assert Backoff().ceiling(30) == RETRY_CAP
        assert Backoff().ceiling(30, left=timedelta(hours=5)) == RETRY_CAP

    def test_every_overdue_agent_renews_within_a_minute_of_the_ca_answering(self) -> None:
        """600 agents whose renewal points (66% of a 1 h lifetime) fell in a 15-minute outage
        retry with the default backoff; the first attempt of each after the CA answers again
        comes within one minute of it, whatever its time left, and the attempts spread over
        that minute rather than arriving at once."""
        rng, outage = random.Random(11), timedelta(minutes=15)
        recovered = T0 + timedelta(minutes=200)
        backoff = Backoff()
        firsts = []
        for _ in range(600):
            missed = recovered - outage * rng.random()
            not_after = missed + HOUR * 0.34
            at, failures = missed, 0
            while at < recovered:  # every attempt before the CA answers fails
                failures += 1
                at += backoff.delay(failures, rng, not_after - at)
            firsts.append(at - recovered)
        assert max(firsts) <= timedelta(minutes=1)
        seconds = sorted(f.total_seconds() for f in firsts)
        assert seconds[len(seconds) // 2] >= 15  # half of them later than 15 s: spread, not a burst
        assert max(sum(1 for s in seconds if b <= s < b + 10) for b in range(0, 60, 10)) <= 0.35 * 600

    def test_the_renewal_after_a_late_one_moves_back_to_the_fleet_rhythm(self) -> None:
        """The certificate an overdue renewal produced plans its renewal earlier by the
        lateness: a fleet whose renewals bunched after an outage spreads out again."""
        late = timedelta(minutes=9)
        on_time = Schedule(jitter=0).plan(T0, T0 + HOUR)
        after = Schedule(jitter=0).plan(T0, T0 + HOUR, late_by=late)
        assert after.nominal == on_time.nominal - late


class TestRetryAfter:
    def test_never_earlier_than_retry_after_and_jittered_within_bounds(self) -> None:
        rng = random.Random(2)
        delays = [retry_delay(2, rng) for _ in range(500)]
        assert all(2 <= d <= 3 for d in delays) and max(delays) - min(delays) > 0.8
        assert all(30 <= retry_delay(30, rng) <= 45 for _ in range(100))
        assert all(600 <= retry_delay(600, rng) <= 660 for _ in range(100))  # jitter at most a minute


class TestBackoff:
    def test_grows_exponentially_up_to_the_cap(self) -> None:
        b = Backoff(base=timedelta(seconds=5), cap=timedelta(minutes=10))
        ceilings = [b.ceiling(n) for n in range(1, 12)]
        assert ceilings[:4] == [timedelta(seconds=s) for s in (5, 10, 20, 40)]
        assert ceilings[-1] == timedelta(minutes=10)
        assert ceilings == sorted(ceilings)

    def test_never_longer_than_a_quarter_of_the_time_left(self) -> None:
        b = Backoff()
        assert b.ceiling(20, left=timedelta(minutes=2)) == timedelta(seconds=30)
        assert b.ceiling(20, left=timedelta(seconds=1)) == b.floor

    def test_jitter_spreads_a_fleet_that_failed_together(self) -> None:
        b, rng = Backoff(), random.Random(7)
        delays = [b.delay(8, rng) for _ in range(500)]
        assert all(b.ceiling(8) * 0.1 <= d <= b.ceiling(8) for d in delays)
        assert len(set(delays)) == 500
        assert max(delays) - min(delays) > b.ceiling(8) * 0.7


class TestAssess:
    def test_levels(self) -> None:
        na = T0 + HOUR
        assert assess(T0 + HOUR / 2, T0, na, None).level is Level.OK
        failing = assess(T0 + HOUR * 0.7, T0, na, T0 + HOUR * 0.66)
        assert failing.level is Level.WARNING
        assert failing.message.startswith("expires in 18m 0s, renewal failing since 2030-01-01T00:39:36")
        assert assess(T0 + HOUR * 0.95, T0, na, T0 + HOUR * 0.66).level is Level.ERROR
        assert assess(T0 + HOUR * 0.95, T0, na, T0, Threshold.parse("1m")).level is Level.WARNING
        expired = assess(T0 + 2 * HOUR, T0, na, None)
        assert expired.level is Level.ERROR and expired.message == "expired 1h 0m ago"
        assert assess(T0, None, None, None).level is Level.ERROR
