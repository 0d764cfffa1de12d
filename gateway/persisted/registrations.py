"""`RegistrationLimits`: how much one process may register in the store of automatic persisted
queries, so that no client can fill the Redis every process shares (its budget and cache keys
live there too, and they expire, so an eviction policy would not protect them).

Two token buckets, both on an injectable clock: one of registrations (`per_second`, up to
`burst` at once), one of bytes (`bytes_per_ttl` a `ttl`: the value's UTF-8 bytes plus
`KEY_OVERHEAD` for its key). A registration takes from both or from neither. As a registration
lives `ttl` seconds, what one process keeps in the store at any moment is at most twice
`bytes_per_ttl` (a full bucket spent, and a whole refill spent within the same `ttl`).
A refused registration is said in a warning at most once a minute, with the count since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, Literal

from gateway.observe.logs import LogLimiter

__all__ = ["KEY_OVERHEAD", "RegistrationLimits", "TokenBucket"]

logger = logging.getLogger(__name__)

#: Bytes a registration is charged on top of its document: the key's name (the prefix, `:apq:`
#: and 66 characters of hash in braces) and what Redis keeps for a key with an expiry.
KEY_OVERHEAD: Final = 160

Refusal = Literal["rate", "bytes"]


class TokenBucket:
    """Up to `capacity` tokens, refilled at `rate` a second of `clock`; full at the start.
    By hand because the libraries' limiters wait for tokens, and here nothing may wait: a
    request either registers now or runs unregistered."""

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


class RegistrationLimits:
    """See the module docstring. `admit(size)` says whether a document of `size` UTF-8 bytes may
    be registered now (and counts it), or why not."""

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        bytes_per_ttl: int,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        warnings: LogLimiter | None = None,
    ) -> None:
        self._registrations = TokenBucket(rate=per_second, capacity=burst, clock=clock)
        self._bytes = TokenBucket(rate=bytes_per_ttl / ttl, capacity=bytes_per_ttl, clock=clock)
        self._per_second = per_second
        self._bytes_per_ttl = bytes_per_ttl
        self._warnings = warnings or LogLimiter(clock=clock)

    def admit(self, size: int) -> Refusal | None:
        """None when a document of `size` bytes may be registered now (its tokens are taken),
        else `rate` (too many registrations) or `bytes` (too many bytes registered)."""
        charged = size + KEY_OVERHEAD
        if not self._registrations.has(1):
            refusal: Refusal = "rate"
        elif not self._bytes.has(charged):
            refusal = "bytes"
        else:
            self._registrations.take(1)
            self._bytes.take(charged)
            return None
        count = self._warnings.happened(refusal)
        if count is not None:
            limit = (
                f"GATEWAY_APQ_REGISTRATIONS_PER_SECOND ({self._per_second:g})"
                if refusal == "rate"
                else f"GATEWAY_APQ_REGISTERED_BYTES_PER_TTL ({self._bytes_per_ttl})"
            )
            logger.warning(
                "Not registering persisted queries over %s: they run, unregistered (%d since "
                "the last such warning, which comes at most once a minute)",
                limit,
                count,
            )
        return refusal
