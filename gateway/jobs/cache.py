"""The snapshot cache: job snapshots kept for as long as their state allows.

A terminal snapshot (Success, Fail) never changes again, so it is kept for long (bounded by
size, least recently used go first). A running one (Queuing, Analysing, or a state we do not know
yet) is kept briefly: long enough to absorb many frontends polling the same job, short enough to
stay fresh; its expiry is rounded down to a grid of the wall clock (`running_expiry`), so that
snapshots fetched together expire together. "Not found" is kept briefly too (a negative entry),
so that a bad id cannot burn the upstream budget. A ttl of 0 means "do not cache" for that kind
of snapshot. Failures are never cached (the fetcher does not put them).

`SnapshotCache` is what the fetcher uses; `LocalSnapshotCache` serves one process,
`gateway.jobs.redis_cache.RedisSnapshotCache` every process sharing a Redis (which is why the
methods are async). The fetcher reads a whole request's ids with one `get_many` call: one round
trip to a shared cache, however many ids. Each tier counts its lookups in a `Lookups` (hits,
misses): a `get`/`get_many` id is one lookup of the memory tier, and, when that misses and a
shared tier exists, one of the shared tier; `peek_finished` counts its hits only (a miss there
is followed by a real lookup).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cachetools import Cache, TLRUCache

from gateway.model import Job
from gateway.settings import GatewaySettings


class Tally(Protocol):
    """A counter (a prometheus-client counter is one)."""

    def inc(self, amount: float = 1) -> None: ...


class _NoTally:
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Lookups:
    """Where one tier of a cache counts its lookups."""

    hits: Tally
    misses: Tally


#: Lookups nobody counts.
UNCOUNTED = Lookups(_NoTally(), _NoTally())


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached answer: a snapshot, or None when the upstream knows no job with that id."""

    job: Job | None


class SnapshotCache(Protocol):
    """A cache of job snapshots keyed by job id."""

    async def get(self, job_id: str) -> CacheEntry | None:
        """The entry for `job_id` while it is fresh, else None (a miss)."""
        ...

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        """`get` for each of `job_ids`: one entry (or None) per id, in the same order, repeats
        included. A shared implementation makes one round trip at most for the lot."""
        ...

    async def put(self, job_id: str, job: Job | None) -> None:
        """Remember `job` (None: not found) for the ttl its state calls for."""
        ...

    def peek_finished(self, job_id: str) -> Job | None:
        """A fresh snapshot of `job_id` in a final state held in this process's memory, else
        None; no I/O. A final snapshot never changes, so serving it this way (without a loader
        batch or a round trip) can never make an answer staler or inconsistent."""
        ...


#: The longest step of the grid that running snapshots' expiries are rounded down to.
RUNNING_GRID_MAX = 1.0


def running_expiry(fetched_at: float, ttl: float) -> float:
    """When a running snapshot fetched at `fetched_at` (Unix seconds) stops being served: its
    ttl later, rounded down to a whole multiple of a step of the wall clock, never later. The
    step is the ttl, or the ttl's largest whole fraction of at most `RUNNING_GRID_MAX` (60 s:
    1 s; 1.5 s: 0.75 s), so that a snapshot fetched right after a grid point lives its whole
    ttl and its next fetch comes right after a grid point again.

    Why: an answer that shows many running jobs stays right until the first of their snapshots
    expires. Expiring each `ttl` after its own fetch, snapshots refetched one by one at different
    moments drift apart, until one of them expires every few milliseconds and no such answer
    lives long. On the grid, snapshots fetched in one grid step expire at the same moment and
    are refetched together, and an answer of all of them lives until the next grid point. The
    price is a shorter life for a snapshot fetched late in its step (with a ttl under 1 s, down
    to nothing just before a grid point): still at most one call per job per grid step.
    """
    if ttl <= 0:
        return fetched_at
    step = ttl / math.ceil(ttl / RUNNING_GRID_MAX)
    end = fetched_at + ttl
    # min(): float division must not round the grid point past the ttl's end.
    return min(end, math.floor(end / step) * step)


@dataclass(frozen=True, slots=True)
class CacheTtls:
    """Seconds a snapshot is kept, by what it says. 0 means not cached at all."""

    terminal: float
    running: float
    not_found: float

    def __post_init__(self) -> None:
        for name in ("terminal", "running", "not_found"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"Expected a {name} ttl of at least 0 s, received {value}.")

    def for_job(self, job: Job | None) -> float:
        """Terminal states live long; Queuing, Analysing and unknown states briefly, as an
        unknown state may well be a new intermediate one, until `running_expiry` (counted from
        now, which is right after the fetch: never longer than the running ttl)."""
        if job is None:
            return self.not_found
        if job.state.is_terminal:
            return self.terminal
        if self.running <= 0:
            return 0.0
        return running_expiry(job.fetched_at, self.running) - job.fetched_at

    def expired(self, job: Job | None, now: float) -> bool:
        """Whether `job` is a running snapshot past its `running_expiry` at `now` (Unix
        seconds): for a reader that cannot count on the store's own expiry being that exact."""
        return (
            job is not None
            and not job.state.is_terminal
            and running_expiry(job.fetched_at, self.running) <= now
        )


class LocalSnapshotCache:
    """An in-memory LRU of at most `max_entries` snapshots, each with a state-chosen ttl.

    `get` and `put` are O(1), `get_many` O(1) per id. An expired entry is dropped when it is
    read, or when it reaches the least recently used end; it is never returned. No method
    suspends (none awaits anything): a caller that acts on a miss right after the read knows
    that nothing else ran in between.
    """

    def __init__(
        self,
        *,
        terminal_ttl: float,
        running_ttl: float,
        not_found_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        lookups: Lookups = UNCOUNTED,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"Expected max_entries of at least 1, received {max_entries}.")
        self._ttls = CacheTtls(terminal=terminal_ttl, running=running_ttl, not_found=not_found_ttl)
        self._lookups = lookups
        # job id -> entry, each with the expiry its state calls for, least recently used out.
        self._entries: TLRUCache[str, CacheEntry] = TLRUCache(
            maxsize=max_entries, ttu=self._expiry, timer=clock
        )

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        lookups: Lookups = UNCOUNTED,
    ) -> LocalSnapshotCache:
        return cls(
            terminal_ttl=settings.cache_terminal_ttl,
            running_ttl=settings.cache_running_ttl,
            not_found_ttl=settings.cache_not_found_ttl,
            max_entries=settings.cache_max_entries,
            clock=clock,
            lookups=lookups,
        )

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)

    async def get(self, job_id: str) -> CacheEntry | None:
        return self._counted([self._lookup(job_id)])[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        return self._counted([self._lookup(job_id) for job_id in job_ids])

    def _counted(self, entries: list[CacheEntry | None]) -> list[CacheEntry | None]:
        misses = entries.count(None)
        if misses:
            self._lookups.misses.inc(misses)
        if misses < len(entries):
            self._lookups.hits.inc(len(entries) - misses)
        return entries

    def _lookup(self, job_id: str) -> CacheEntry | None:
        # A read refreshes the entry's recency (the hot set must not age out); an expired one
        # is gone.
        return self._entries.get(job_id)

    def peek_finished(self, job_id: str) -> Job | None:
        # An empty cache (the fallback's, while the shared one serves) answers at once.
        entry = self._entries.get(job_id) if Cache.__len__(self._entries) else None
        job = None if entry is None else entry.job
        if job is None or not job.state.is_terminal:
            return None
        self._lookups.hits.inc()
        return job

    async def put(self, job_id: str, job: Job | None) -> None:
        if self._ttls.for_job(job) <= 0:
            # Not cached; an older entry must not outlive the newer answer either.
            self._entries.pop(job_id, None)
            return
        self._entries[job_id] = CacheEntry(job)

    def _expiry(self, job_id: str, entry: CacheEntry, now: float) -> float:
        return now + self._ttls.for_job(entry.job)
