"""AIMD arithmetic: one decrease per burst, a floor of 1, a linear climb capped by a ceiling
learned from throttles, the ceiling's slow creep back to the limit, convergence under a co-tenant.

Time is moved by hand: every instant is exact.
"""

from __future__ import annotations

import itertools
import math

import pytest

from gateway.budget.aimd import AdaptiveLimit, AimdRule, Decrease


def test_starts_at_the_limit() -> None:
    limit = AdaptiveLimit(AimdRule(100))
    assert limit.grants(0.0) == 100
    assert limit.effective(0.0) == 100.0
    assert limit.ceiling(0.0) == 100.0
    assert math.isinf(limit.next_step(0.0))


def test_a_throttle_halves_the_rate_and_sets_a_ceiling_under_it() -> None:
    rule = AimdRule(100)
    assert rule.decreased(100.0) == Decrease(base=50.0, ceiling=90.0)
    assert rule.decreased(30.0) == pytest.approx(Decrease(base=15.0, ceiling=27.0))
    limit = AdaptiveLimit(rule)
    assert limit.throttled(0.0)
    assert (limit.effective(0.0), limit.ceiling(0.0)) == (50.0, 90.0)


def test_a_burst_of_throttles_is_one_decrease() -> None:
    limit = AdaptiveLimit(AimdRule(100, holdoff=1.0))
    assert limit.throttled(10.0)
    assert not limit.throttled(10.0)
    assert not limit.throttled(10.999)
    assert limit.grants(10.0) == 50
    assert limit.ceiling(10.999) == pytest.approx(90.0, abs=0.001)  # the burst set it once
    # One window later the lower rate is still too high: halve again (from where it climbed),
    # and the ceiling goes under that rate.
    assert limit.throttled(11.0)
    assert limit.effective(11.0) == pytest.approx((50 + 5.0) / 2)
    assert limit.ceiling(11.0) == pytest.approx((50 + 5.0) * 0.9)


def test_never_below_one_call() -> None:
    limit = AdaptiveLimit(AimdRule(4, holdoff=0.0))
    for _ in range(5):
        limit.throttled(0.0)
    assert limit.effective(0.0) == 1.0
    assert limit.ceiling(0.0) == 1.0
    assert limit.grants(0.0) == 1


def test_climbs_linearly_up_to_the_ceiling_and_stays_under_it() -> None:
    rule = AimdRule(100, decrease_factor=0.5, recovery_rate=0.05)
    limit = AdaptiveLimit(rule)
    limit.throttled(0.0)
    # 5 calls per window regained each second, up to the ceiling, 90, reached after 8 s; the
    # ceiling has crept by 50 * (30 / 300) ** 3 = 0.05 call after 30 s: still 90 calls.
    assert [limit.grants(t) for t in (0.0, 1.0, 2.5, 7.99, 8.0, 10.0, 30.0)] == [
        50,
        55,
        62,
        89,
        90,
        90,
        90,
    ]
    assert limit.effective(30.0) == pytest.approx(90.05)
    assert limit.next_step(0.0) == pytest.approx(0.2)
    assert limit.next_step(2.5) == pytest.approx(2.6)


def test_the_ceiling_creeps_back_slowly_then_faster() -> None:
    rule = AimdRule(100, ceiling_recovery_time=300.0)
    after_a_throttle = Decrease(base=50.0, ceiling=90.0)
    # limit / 2 * (t / 300) ** 3 calls regained t seconds after the decrease.
    assert rule.ceiling(after_a_throttle, 60.0) == pytest.approx(90.4)
    assert rule.ceiling(after_a_throttle, 120.0) == pytest.approx(93.2)
    assert rule.ceiling(after_a_throttle, 150.0) == pytest.approx(96.25)
    # Half the limit regained in the ceiling recovery time; never above the limit.
    assert rule.ceiling(Decrease(base=25.0, ceiling=50.0), 300.0) == pytest.approx(100.0)
    assert rule.ceiling(Decrease(base=25.0, ceiling=50.0), 1000.0) == 100.0
    # The next step of a rate held by its ceiling: when the ceiling reaches 91.
    limit = AdaptiveLimit(rule)
    limit.throttled(0.0)
    step = 300.0 * (2 * 1 / 100) ** (1 / 3)
    assert step == pytest.approx(81.43, abs=0.01)
    assert limit.next_step(8.0) == pytest.approx(step)
    assert limit.grants(step - 0.01) == 90
    assert limit.grants(step) == 91


def test_full_recovery_after_a_long_quiet() -> None:
    rule = AimdRule(100)
    limit = AdaptiveLimit(rule)
    limit.throttled(0.0)
    # The ceiling at 90 regains its 10 calls in 300 * 0.2 ** (1/3) s: about 3 minutes.
    recovered = rule.recovered_in(Decrease(base=50.0, ceiling=90.0))
    assert recovered == pytest.approx(175.44, abs=0.01)
    assert limit.grants(recovered - 0.1) == 99
    assert limit.grants(recovered) == 100
    assert limit.effective(recovered) == 100.0
    assert math.isinf(limit.next_step(recovered))
    assert limit.effective(10_000.0) == 100.0
    # A deep cut takes longer, but minutes: a ceiling at a tenth of the limit, about 6.
    assert rule.recovered_in(Decrease(base=5.0, ceiling=10.0)) == pytest.approx(364.9, abs=0.1)


def test_the_step_of_a_small_limit() -> None:
    limit = AdaptiveLimit(AimdRule(10))
    limit.throttled(0.0)
    # 0.5 calls per window per second: one more call every 2 s, up to the ceiling of 9.
    assert limit.grants(0.0) == 5
    assert limit.next_step(0.0) == pytest.approx(2.0)
    assert limit.grants(1.999) == 5
    assert limit.grants(2.0) == 6
    assert limit.grants(8.0) == 9
    assert limit.next_step(8.0) > 100.0  # the ceiling's creep, not the climb


def test_a_decrease_factor_above_the_ceiling_factor_starts_at_the_ceiling() -> None:
    rule = AimdRule(100, decrease_factor=0.95, ceiling_factor=0.8)
    assert rule.decreased(100.0) == Decrease(base=80.0, ceiling=80.0)


def throttle_times(rule: AimdRule, allowed: int, seconds: int) -> list[int]:
    """A co-tenant leaves `allowed` calls per window: each second, if the budget grants more,
    the upstream throttles (reported at that second). The seconds of the decreases."""
    limit = AdaptiveLimit(rule)
    decreases = []
    for t in range(seconds):
        if limit.grants(float(t)) > allowed and limit.throttled(float(t)):
            decreases.append(t)
    return decreases


def test_repeated_throttles_converge_under_the_upstream_limit() -> None:
    rule = AimdRule(100)
    # The upstream allows 40: throttled at 100 (ceiling 90, rate 50), at 55 one window later
    # (ceiling 49.5, rate 27.5), at 42.5 when the climb passes 40 (ceiling 38.25): the
    # ceiling went geometrically under 40 in three throttles.
    assert throttle_times(rule, 40, 100) == [0, 1, 4]
    limit = AdaptiveLimit(rule)
    for t in (0.0, 1.0, 4.0):
        limit.throttled(t)
    assert limit.ceiling(4.0) == pytest.approx(38.25)
    # Then 38 calls per window, no throttle, for nearly two minutes: the ceiling takes
    # 300 * (2 * 2.75 / 100) ** (1/3) = 114 s to creep up to 41.
    assert [limit.grants(t) for t in (10.0, 60.0, 100.0)] == [38, 38, 39]


def test_a_present_co_tenant_costs_one_throttled_burst_every_two_minutes_or_so() -> None:
    rule = AimdRule(100)
    for allowed in (20, 50, 90):
        decreases = throttle_times(rule, allowed, 3600)
        converged = [t for t in decreases if t > 10]
        gaps = [b - a for a, b in itertools.pairwise(converged)]
        # 300 * (0.2 * allowed / limit) ** (1/3): 102 s, 139 s, 169 s (plus the climb).
        expected = 300 * (0.2 * allowed / 100) ** (1 / 3)
        assert gaps, decreases
        assert all(expected * 0.9 <= gap <= expected * 1.2 for gap in gaps), (allowed, gaps)
        assert len(decreases) <= 4 + 3600 / expected
        # Between throttles, nearly the allowed rate: never above, at least 85% of it.
        limit = AdaptiveLimit(rule)
        for t in range(3600):
            if t in decreases:
                limit.throttled(float(t))
            if t > converged[0] + 10 and all(not 0 <= t - d < 10 for d in decreases):
                assert 0.85 * allowed <= limit.grants(float(t)) <= allowed, (allowed, t)


def test_regains_the_limit_in_minutes_once_the_co_tenant_leaves() -> None:
    rule = AimdRule(100)
    limit = AdaptiveLimit(rule)
    for t in throttle_times(rule, 50, 20):
        limit.throttled(float(t))
    # Converged under 50; the co-tenant leaves at t = 20 and nothing throttles any more.
    assert limit.grants(20.0) <= 50
    assert limit.grants(200.0) < 100
    assert limit.grants(320.0) == 100


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit of at least 1"),
        ({"limit": 5, "decrease_factor": 1.0}, "decrease factor"),
        ({"limit": 5, "recovery_rate": 0.0}, "recovery rate"),
        ({"limit": 5, "holdoff": -1.0}, "holdoff"),
        ({"limit": 5, "ceiling_factor": 1.0}, "ceiling factor"),
        ({"limit": 5, "ceiling_factor": 0.0}, "ceiling factor"),
        ({"limit": 5, "ceiling_recovery_time": 0.0}, "ceiling recovery time"),
    ],
)
def test_rejects_nonsense(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AimdRule(**options)  # type: ignore[arg-type]
