"""`TenantRateLimit`: at most `GATEWAY_TENANT_QPS` operations per second from one tenant, in
this process, with a burst of as many; more are `RATE_LIMITED` with `retryAfter`.

A token bucket (`gateway.token_bucket`) per tenant (a caller with no tenant counts under its
own name). Buckets of tenants not seen for a while go (a bounded LRU), so a stream of made-up
tenants cannot grow memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import LRUCache

from gateway.callers.caller import Caller
from gateway.errors import RateLimited
from gateway.token_bucket import TokenBucket

#: Tenants whose buckets are kept (the least recently seen go first; a new bucket is full).
MAX_TENANTS = 10_000


class TenantRateLimit:
    def __init__(self, qps: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self._burst = max(1.0, qps)
        self._clock = clock
        self._buckets: LRUCache[object, TokenBucket] = LRUCache(maxsize=MAX_TENANTS)

    def check(self, caller: Caller) -> None:
        """Take one operation from `caller`'s tenant's bucket, or raise RateLimited. The
        unauthenticated operator (no authentication) is not limited."""
        key = caller.fairness_key
        if key is None:
            return
        bucket = self._buckets.get(key)  # a get counts as seen in the LRU
        if bucket is None:
            bucket = TokenBucket(rate=self.qps, capacity=self._burst, clock=self._clock)
            self._buckets[key] = bucket
        if not bucket.has(1.0):
            raise RateLimited(self.qps, retry_after=bucket.seconds_until(1.0))
        bucket.take(1.0)
