"""The token bucket on a clock moved by hand."""

from __future__ import annotations

from gateway.token_bucket import TokenBucket
from tests.jobs.jobfakes import ManualClock


def test_a_bucket_starts_full_and_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert bucket.has(4.0)
    bucket.take(4.0)
    assert not bucket.has(1.0)
    assert bucket.seconds_until(1.0) == 0.5
    clock.now += 0.5
    assert bucket.has(1.0)
    assert not bucket.has(1.5)
    assert bucket.seconds_until(1.5) == 0.25
    clock.now += 3600
    assert bucket.has(4.0)
    assert not bucket.has(4.5)
    assert bucket.seconds_until(3.0) == 0.0
