"""AIMD arithmetic: one decrease per burst, a floor of 1, a linear climb back to the limit."""

from __future__ import annotations

import math

import pytest

from gateway.jobs.adaptive import AdaptiveLimit, AimdRule


def test_starts_at_the_limit() -> None:
    limit = AdaptiveLimit(AimdRule(100))
    assert limit.grants(0.0) == 100
    assert limit.effective(0.0) == 100.0
    assert math.isinf(limit.next_step(0.0))


def test_a_burst_of_throttles_is_one_decrease() -> None:
    limit = AdaptiveLimit(AimdRule(100, holdoff=1.0))
    assert limit.throttled(10.0)
    assert not limit.throttled(10.0)
    assert not limit.throttled(10.999)
    assert limit.grants(10.0) == 50
    # One window later the lower rate is still too high: halve again (from where it climbed).
    assert limit.throttled(11.0)
    assert limit.effective(11.0) == pytest.approx((50 + 5.0) / 2)


def test_never_below_one_call() -> None:
    limit = AdaptiveLimit(AimdRule(4, holdoff=0.0))
    for _ in range(5):
        limit.throttled(0.0)
    assert limit.effective(0.0) == 1.0
    assert limit.grants(0.0) == 1


def test_recovers_linearly_to_the_limit_and_no_further() -> None:
    rule = AimdRule(100, decrease_factor=0.5, recovery_rate=0.05)
    limit = AdaptiveLimit(rule)
    limit.throttled(0.0)
    # 5 calls per window regained each second: whole again after 10 s.
    assert [limit.grants(t) for t in (0.0, 1.0, 2.5, 9.99, 10.0, 60.0)] == [
        50,
        55,
        62,
        99,
        100,
        100,
    ]
    assert limit.next_step(0.0) == pytest.approx(0.2)
    assert limit.next_step(2.5) == pytest.approx(2.6)
    assert math.isinf(limit.next_step(10.0))


def test_the_step_of_a_small_limit() -> None:
    limit = AdaptiveLimit(AimdRule(10))
    limit.throttled(0.0)
    # 0.5 calls per window per second: one more call every 2 s.
    assert limit.grants(0.0) == 5
    assert limit.next_step(0.0) == pytest.approx(2.0)
    assert limit.grants(1.999) == 5
    assert limit.grants(2.0) == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit of at least 1"),
        ({"limit": 5, "decrease_factor": 1.0}, "decrease factor"),
        ({"limit": 5, "recovery_rate": 0.0}, "recovery rate"),
        ({"limit": 5, "holdoff": -1.0}, "holdoff"),
    ],
)
def test_rejects_nonsense(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AimdRule(**options)  # type: ignore[arg-type]
