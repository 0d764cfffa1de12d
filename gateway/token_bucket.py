"""`TokenBucket`: up to `capacity` tokens, refilled at `rate` a second of an injectable clock,
full at the start. The one token bucket of the package (the tenant rate limit and the
registration limits of persisted queries both count with it).

By hand because the libraries' limiters (aiolimiter) wait for tokens, and here nothing may
wait: a request is either served now or refused at once with when to retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """See the module docstring. `has` refills and says whether tokens are there; `take`
    spends what `has` just said is there; `seconds_until` says when they would be."""

    def __init__(
        self, *, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def has(self, amount: float) -> bool:
        """Whether `amount` tokens are there now."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return self._tokens >= amount

    def take(self, amount: float) -> None:
        """Spend `amount` tokens that `has` just said are there."""
        self._tokens -= amount

    def seconds_until(self, amount: float) -> float:
        """Seconds until `amount` tokens are there, counted from the last `has`."""
        return max(0.0, (amount - self._tokens) / self._rate)
