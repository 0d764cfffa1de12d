"""Fetch claims: one upstream call per job id at a time for the whole fleet, not just per process
(`docs/architecture.md` section 4).

`FetchClaims.claim(job_id, attempt=n)` makes one attempt and answers a `Lease` (call the
upstream, then `release()` it once the answer is stored or the fetch failed), a `CacheEntry` (a
fresh answer is in the shared cache already: call nothing), or `Held` (another process is
fetching it: try again in `Held.retry_in`, which grows with the attempts).

`RedisFetchClaims` keeps `{prefix}:fetching:{<id>}` = "{process token}:{sequence}" (SET PX
lease; the id is the hash tag of both keys) next to the snapshots of `RedisSnapshotCache`. CLAIM
reads the snapshot and the claim atomically, so whoever claims an id has checked, under the
claim, that no fresh answer exists; RELEASE deletes the claim only if it still holds this
lease's value. The lease lasts about the upstream read timeout. Redis not answering raises
`BackendUnavailable`, which `FailoverClaims` turns into "no claim, just fetch": a claim never
fails a fetch."""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from gateway.jobs.cache import CacheEntry
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.settings import GatewaySettings
from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable
from gateway.shared.pipelining import ScriptBatcher

__all__ = [
    "CLAIM",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "NO_LEASE",
    "POLL_GROWTH",
    "RELEASE",
    "ClaimOutcome",
    "FetchClaims",
    "Held",
    "Lease",
    "RedisFetchClaims",
]

#: Seconds before a waiter's first new attempt to claim an id another process holds; each
#: further wait is `POLL_GROWTH` times the previous one, up to `DEFAULT_MAX_POLL_INTERVAL`.
#: The trade: how late a waiter may see the holder's answer, against one round trip per
#: waiting id per interval (10, 15, 22, 34, 51, 76, 114, 171, 200, 200... ms).
DEFAULT_POLL_INTERVAL: Final = 0.01
DEFAULT_MAX_POLL_INTERVAL: Final = 0.2
POLL_GROWTH: Final = 1.5

# KEYS[1] the snapshot key, KEYS[2] the claim key. ARGV[1] the lease's value, ARGV[2] the lease
# in ms, ARGV[3] this process's token followed by ":", ARGV[4] "1" to ignore the snapshot (the
# caller could not read it). Answers {"value", snapshot}, {"claimed"} or {"held", pttl in ms}.
CLAIM: Final = """
if ARGV[4] ~= '1' then
  local value = redis.call('GET', KEYS[1])
  if value then
    return {'value', value}
  end
end
local holder = redis.call('GET', KEYS[2])
if (not holder) or string.sub(holder, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {'claimed'}
end
return {'held', redis.call('PTTL', KEYS[2])}
"""

# KEYS[1] the claim key, ARGV[1] the lease's value. Deletes the claim only if it is this lease.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    """The right to call the upstream for one id, until released or expired."""

    async def release(self) -> None:
        """Give the claim up, if it is still this lease's. Raises `BackendUnavailable` when
        the backend does not answer (the claim then expires on its own)."""
        ...


@dataclass(frozen=True, slots=True)
class Held:
    """Another process is fetching the id: attempt the claim again in `retry_in` seconds."""

    retry_in: float


#: What one claim attempt answers; see the module docstring.
ClaimOutcome: TypeAlias = "Lease | CacheEntry | Held"


class FetchClaims(Protocol):
    """Claims on the ids being fetched, shared by the processes that share a snapshot cache."""

    async def claim(self, job_id: str, *, attempt: int = 0) -> ClaimOutcome:
        """One attempt to claim `job_id`: a `Lease` (call, then release), a `CacheEntry` (a
        fresh answer is there: no call) or `Held` (another process calls: try again later).
        `attempt` counts the `Held` answers the caller already had for this fetch."""
        ...


class _NoLease:
    """The lease of a fetch that claimed nothing (no shared backend): releasing is a no-op."""

    __slots__ = ()

    async def release(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_LEASE"


#: Go ahead and call, holding no claim (the claims' backend is down, or there is none).
NO_LEASE: Final[Lease] = _NoLease()


class RedisFetchClaims:
    """`FetchClaims` in Redis, next to the snapshots of `cache` (same client, same prefix).

    Each instance is one process: it has a token of its own, and its leases' values start with
    it. `lease` (seconds) is how long a claim lasts if its holder never releases it;
    `poll_interval` is a waiter's first wait before it tries again, growing by `POLL_GROWTH`
    per attempt up to `max_poll_interval`, and never past the lease's end.
    """

    def __init__(
        self,
        client: RedisClient,
        cache: RedisSnapshotCache,
        *,
        lease: float,
        prefix: str = "mpsgw",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        token: str | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"Expected a lease of more than 0 s, received {lease}.")
        if poll_interval <= 0:
            raise ValueError(
                f"Expected a poll interval of more than 0 s, received {poll_interval}."
            )
        self._cache = cache
        self._prefix = prefix
        self._lease_ms = max(1, math.ceil(lease * 1000))
        self._poll_interval = poll_interval
        self._max_poll_interval = max(poll_interval, max_poll_interval)
        self._token = token if token is not None else secrets.token_hex(8)
        self._sequence = itertools.count(1)
        self._claim_script = client.register_script(CLAIM)
        self._release_script = client.register_script(RELEASE)
        # A burst of ids claims (and releases) in a few pipelines, not a round trip each.
        self._scripts = ScriptBatcher(client)

    @classmethod
    def from_settings(
        cls, client: RedisClient, cache: RedisSnapshotCache, settings: GatewaySettings
    ) -> RedisFetchClaims:
        """A lease of the upstream read timeout: a holder's call cannot take longer."""
        return cls(client, cache, lease=settings.read_timeout, prefix=settings.redis_prefix)

    @property
    def lease(self) -> float:
        """Seconds a claim lasts when its holder never releases it."""
        return self._lease_ms / 1000

    @property
    def token(self) -> str:
        """This process's token, at the start of each of its leases' values."""
        return self._token

    def key(self, job_id: str) -> str:
        """The Redis key of the claim on `job_id`."""
        return f"{self._prefix}:fetching:{{{job_id}}}"

    async def claim(self, job_id: str, *, attempt: int = 0) -> ClaimOutcome:
        """One CLAIM round trip (two when the snapshot there cannot be read by this version).

        Raises `BackendUnavailable` when Redis does not answer.
        """
        value = f"{self._token}:{next(self._sequence)}"
        keys = [self._cache.key(job_id), self.key(job_id)]
        ignore_snapshot = "0"
        while True:
            try:
                answer = await self._scripts.run(
                    self._claim_script,
                    keys,
                    [value, self._lease_ms, f"{self._token}:", ignore_snapshot],
                )
            except REDIS_UNAVAILABLE as exc:
                raise redis_unavailable(exc) from exc
            kind = _text(answer[0])
            if kind == "claimed":
                return _RedisLease(self, self.key(job_id), value)
            if kind == "held":
                wait = min(self._poll_interval * POLL_GROWTH**attempt, self._max_poll_interval)
                left_ms = int(answer[1])
                # -1: a claim without expiry (not one of ours); poll at the usual pace.
                return Held(retry_in=min(wait, left_ms / 1000) if left_ms > 0 else wait)
            entry = self._cache.accept(job_id, answer[1])
            if entry is not None:
                return entry
            # A value this version cannot read is a miss, as for the cache: claim regardless.
            ignore_snapshot = "1"

    async def _release(self, key: str, value: str) -> None:
        try:
            await self._scripts.run(self._release_script, [key], [value])
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc


class _RedisLease:
    __slots__ = ("_claims", "_key", "_value")

    def __init__(self, claims: RedisFetchClaims, key: str, value: str) -> None:
        self._claims = claims
        self._key = key
        self._value = value

    async def release(self) -> None:
        await self._claims._release(self._key, self._value)

    def __repr__(self) -> str:
        return f"<lease {self._key}>"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
