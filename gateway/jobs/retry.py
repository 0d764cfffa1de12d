"""When and after how long a failed upstream call is tried again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway import errors
from gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with full-jitter exponential backoff.

    Only errors whose class says `retryable = True` are retried, at most `max_retries` times.
    The delay before retry `attempt` (0 for the first retry) is uniform in
    `[0, min(max_delay, base_delay * 2**attempt)]`, and never less than the `retry_after` the
    error carries (a throttled answer may say how long to stay away). Full jitter spreads the
    retries of many callers that failed together, so they do not come back together.
    """

    max_retries: int
    base_delay: float
    max_delay: float

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"Expected max_retries >= 0, received {self.max_retries}.")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(
                f"Expected delays >= 0, received base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}."
            )

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
        )

    def should_retry(self, error: errors.GatewayError, attempt: int) -> bool:
        """Whether to try again after `error`, when `attempt` retries were made already."""
        return error.retryable and attempt < self.max_retries

    def delay(
        self,
        error: errors.GatewayError,
        attempt: int,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait before retry number `attempt` (0-based) after `error`."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        jittered = uniform(0.0, ceiling)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > jittered:
            return float(retry_after)
        return jittered
