"""The registration limits of automatic persisted queries, on a clock moved by hand."""

from __future__ import annotations

import logging

import pytest

from gateway.observe.logs import LogLimiter
from gateway.persisted.registrations import KEY_OVERHEAD, RegistrationLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(
    clock: Clock, *, per_second: float = 2.0, burst: int = 3, bytes_per_ttl: int = 10_000
) -> RegistrationLimits:
    return RegistrationLimits(
        per_second=per_second,
        burst=burst,
        bytes_per_ttl=bytes_per_ttl,
        ttl=100.0,
        clock=clock,
        warnings=LogLimiter(interval=60.0, clock=clock),
    )


def test_a_bucket_starts_full_and_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert bucket.has(4.0)
    bucket.take(4.0)
    assert not bucket.has(1.0)
    clock.now += 0.5
    assert bucket.has(1.0)
    assert not bucket.has(1.5)
    clock.now += 3600
    assert bucket.has(4.0)
    assert not bucket.has(4.5)


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = limits(clock)
    assert [limiter.admit(10) for _ in range(4)] == [None, None, None, "rate"]
    clock.now += 0.5  # one more at 2 a second
    assert [limiter.admit(10) for _ in range(2)] == [None, "rate"]


def test_bytes_are_bounded_per_ttl_with_each_keys_overhead() -> None:
    clock = Clock()
    limiter = limits(clock, per_second=1000.0, burst=1000, bytes_per_ttl=3 * (100 + KEY_OVERHEAD))
    assert [limiter.admit(100) for _ in range(4)] == [None, None, None, "bytes"]
    # A tenth of the ttl refills a tenth of the bytes: not enough for one more.
    clock.now += 10.0
    assert limiter.admit(100) == "bytes"
    clock.now += 30.0  # 40% of the ttl since the bucket emptied: more than one
    assert [limiter.admit(100) for _ in range(2)] == [None, "bytes"]


def test_a_refusal_takes_nothing_from_either_bucket() -> None:
    clock = Clock()
    limiter = limits(clock, burst=2, bytes_per_ttl=2 * (100 + KEY_OVERHEAD))
    assert limiter.admit(5_000) == "bytes"  # larger than the whole byte bucket
    # The registrations it was refused did not spend a registration token.
    assert [limiter.admit(100), limiter.admit(100), limiter.admit(100)] == [None, None, "rate"]


def test_within_any_ttl_at_most_twice_the_bytes_are_registered() -> None:
    clock = Clock()
    size = 1000
    budget = 10 * (size + KEY_OVERHEAD)
    limiter = limits(clock, per_second=1000.0, burst=1000, bytes_per_ttl=budget)
    admitted: list[float] = []
    for _ in range(20_000):  # a client registering as fast as it can, every 10 ms
        if limiter.admit(size) is None:
            admitted.append(clock.now)
        clock.now += 0.01
    live_at_worst = max(
        sum(1 for at in admitted if start <= at < start + 100.0) for start in admitted
    )
    assert 10 < live_at_worst <= 20


def test_refusals_are_warned_of_once_a_minute_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = limits(clock, per_second=0.001, burst=1)
    with caplog.at_level(logging.WARNING, logger="gateway.persisted.registrations"):
        assert limiter.admit(10) is None
        assert [limiter.admit(10) for _ in range(5)] == ["rate"] * 5
        clock.now += 61.0
        assert [limiter.admit(10) for _ in range(3)] == ["rate"] * 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "GATEWAY_APQ_REGISTRATIONS_PER_SECOND (0.001)" in messages[0]
    assert "(1 since the last such warning" in messages[0]
    assert "(5 since the last such warning" in messages[1]
