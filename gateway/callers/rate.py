"""`TenantRateLimit`: at most `GATEWAY_TENANT_QPS` operations per second from one tenant, in
this process, with a burst of as many; more are `RATE_LIMITED` with `retryAfter`.

A token bucket per tenant (a caller with no tenant counts under its own name). Written here
because the libraries at hand wait for a token (aiolimiter) where a gateway must refuse at
once and say when to retry; it is a dozen lines. Buckets of tenants not seen for a while go
(a bounded LRU), so a stream of made-up tenants cannot grow memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import LRUCache

from gateway.callers.caller import Caller
from gateway.errors import RateLimited

#: Tenants whose buckets are kept (the least recently seen go first; a new bucket is full).
MAX_TENANTS = 10_000


class TenantRateLimit:
    def __init__(self, qps: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self._burst = max(1.0, qps)
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: LRUCache[object, tuple[float, float]] = LRUCache(maxsize=MAX_TENANTS)

    def check(self, caller: Caller) -> None:
        """Take one operation from `caller`'s tenant's bucket, or raise RateLimited. The
        unauthenticated operator (no authentication) is not limited."""
        key = caller.fairness_key
        if key is None:
            return
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self.qps)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited(self.qps, retry_after=(1.0 - tokens) / self.qps)
        self._buckets[key] = (tokens - 1.0, now)
