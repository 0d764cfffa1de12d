from __future__ import annotations

import pytest

from gateway import errors
from gateway.jobs.retry import RetryPolicy
from gateway.settings import GatewaySettings

POLICY = RetryPolicy(max_retries=2, base_delay=0.2, max_delay=1.0)


def highest(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (errors.UpstreamThrottled("Throttling.User"), 0, True),
        (errors.UpstreamUnavailable("503"), 1, True),
        (errors.UpstreamTimeout("read timeout"), 2, False),  # retries used up
        (errors.UpstreamAuthFailed("bad signature"), 0, False),
        (errors.UpstreamRejected("InvalidParameter"), 0, False),
    ],
)
def test_only_retryable_errors_within_the_limit(
    error: errors.GatewayError, attempt: int, expected: bool
) -> None:
    assert POLICY.should_retry(error, attempt) is expected


def test_backoff_doubles_up_to_the_ceiling_with_full_jitter() -> None:
    error = errors.UpstreamUnavailable("503")
    assert [POLICY.delay(error, n, highest) for n in range(5)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert POLICY.delay(error, 3, lambda low, high: low) == 0.0
    assert 0.0 <= POLICY.delay(error, 1) <= 0.4


def test_retry_after_is_a_floor() -> None:
    error = errors.UpstreamThrottled("Throttling", retry_after=1.5)
    assert POLICY.delay(error, 0, highest) == 1.5
    small = errors.UpstreamThrottled("Throttling", retry_after=0.05)
    assert POLICY.delay(small, 0, highest) == pytest.approx(0.2)


def test_from_settings() -> None:
    settings = GatewaySettings(max_retries=3, retry_base_delay=0.1, retry_max_delay=4.0)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(3, 0.1, 4.0)
