"""`RedisSnapshotCache`: the snapshot cache shared by every gateway process through Redis.

One key per job id, `{prefix}:job:{<id>}` (the id is its hash tag), set with the ttl its state
allows (`CacheTtls`, as `LocalSnapshotCache`), holding versioned JSON (`{"v": 1, "fetchedAt":
..., "raw": {...}}` or `{"v": 1, "notFound": true}`); `get_many` reads any number in one `MGET`.
A job is rebuilt from `raw` with the current decoder; a value of another version, or one that
does not parse, is a miss. In front of Redis, a memo of finished snapshots (they never change;
each expires when the shared copy does), and, by value, what the last bytes read for an id
decoded to (the bytes are read every time: this saves CPU, never freshness). Redis not answering
raises `BackendUnavailable`, which `FailoverCache` turns into a local fallback.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from cachetools import Cache, LRUCache, TLRUCache
from redis.asyncio.cluster import RedisCluster

from gateway.jobs.cache import UNCOUNTED, CacheEntry, CacheTtls, Lookups
from gateway.model import Job
from gateway.mps.decode import decode_job
from gateway.settings import GatewaySettings
from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable

__all__ = ["FORMAT_VERSION", "RedisSnapshotCache"]

logger = logging.getLogger(__name__)

#: The version of the stored JSON. Bump it whenever the value's meaning changes: values of any
#: other version are misses, never misread.
FORMAT_VERSION: Final = 1


class RedisSnapshotCache:
    """A `SnapshotCache` in Redis, shared by processes that use the same Redis and `prefix`.

    `region` is passed to `decode_job` when a snapshot is rebuilt; every process sharing a
    prefix must use the same one (they serve the same account, so they do). `memo_max_entries`
    bounds the in-process memo of terminal snapshots (0 turns it off), `decoded_max_entries` the
    memory of decoded values (0 turns it off). `clock` is the wall clock
    (`time.time`), the clock of `Job.fetched_at`. The memo counts its lookups in `memory`, the
    reads from Redis in `shared` (as `gateway.jobs.cache` says).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        terminal_ttl: float,
        running_ttl: float,
        not_found_ttl: float,
        prefix: str = "mpsgw",
        region: str | None = None,
        memo_max_entries: int = 10_000,
        decoded_max_entries: int = 4_096,
        clock: Callable[[], float] = time.time,
        memory: Lookups = UNCOUNTED,
        shared: Lookups = UNCOUNTED,
    ) -> None:
        if memo_max_entries < 0:
            raise ValueError(
                f"Expected memo_max_entries of at least 0, received {memo_max_entries}."
            )
        self._redis = client
        # One MGET on one Redis; on a cluster, one per slot (the ids' keys are all over it).
        self._mget = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
        self._ttls = CacheTtls(terminal=terminal_ttl, running=running_ttl, not_found=not_found_ttl)
        self._prefix = prefix
        self._region = region
        self._clock = clock
        self._memory_lookups = memory
        self._shared_lookups = shared
        # job id -> terminal snapshot, until the shared copy expires (wall clock); None: no memo.
        self._memo: TLRUCache[str, Job] | None = None
        if memo_max_entries:
            self._memo = TLRUCache(maxsize=memo_max_entries, ttu=self._memo_expiry, timer=clock)
        # job id -> (the stored value last read, its entry); None: nothing remembered.
        self._decoded: LRUCache[str, tuple[bytes | str, CacheEntry]] | None = None
        if decoded_max_entries > 0:
            self._decoded = LRUCache(maxsize=decoded_max_entries)

    @classmethod
    def from_settings(
        cls,
        client: RedisClient,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.time,
        memory: Lookups = UNCOUNTED,
        shared: Lookups = UNCOUNTED,
    ) -> RedisSnapshotCache:
        return cls(
            client,
            terminal_ttl=settings.cache_terminal_ttl,
            running_ttl=settings.cache_running_ttl,
            not_found_ttl=settings.cache_not_found_ttl,
            prefix=settings.redis_prefix,
            region=settings.region_id,
            memo_max_entries=settings.cache_max_entries,
            clock=clock,
            memory=memory,
            shared=shared,
        )

    def key(self, job_id: str) -> str:
        """The Redis key of `job_id`'s snapshot. The id is its hash tag: on a Redis Cluster,
        the snapshot and the fetch claim of one id live in one slot, as the claim script needs."""
        return f"{self._prefix}:job:{{{job_id}}}"

    @property
    def memo_size(self) -> int:
        """Terminal snapshots held in process memory (expired ones not yet dropped included)."""
        return 0 if self._memo is None else len(self._memo)

    async def get(self, job_id: str) -> CacheEntry | None:
        """The fresh entry for `job_id` (local memo first, then Redis), else None.

        Raises `BackendUnavailable` when Redis does not answer and the memo cannot serve.
        """
        job = self._recall(job_id)
        if self._memo is not None:
            _count(self._memory_lookups, hits=job is not None, misses=job is None)
        if job is not None:
            return CacheEntry(job)
        try:
            value = await self._redis.get(self.key(job_id))
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        entry = self.accept(job_id, value)
        _count(self._shared_lookups, hits=entry is not None, misses=entry is None)
        return entry

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        """The fresh entry (or None) of each of `job_ids`, in order: the memo answers what it
        can, and ONE `MGET` the rest (none at all when the memo answered everything).

        Raises `BackendUnavailable` when Redis does not answer and the memo cannot serve all.
        """
        entries: list[CacheEntry | None] = [None] * len(job_ids)
        asked: dict[str, list[int]] = {}
        for index, job_id in enumerate(job_ids):
            job = self._recall(job_id)
            if job is not None:
                entries[index] = CacheEntry(job)
            else:
                asked.setdefault(job_id, []).append(index)
        if self._memo is not None:
            recalled = len(job_ids) - sum(len(indexes) for indexes in asked.values())
            _count(self._memory_lookups, hits=recalled, misses=len(job_ids) - recalled)
        if not asked:
            return entries
        try:
            values = await self._mget([self.key(job_id) for job_id in asked])
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        found = 0
        for (job_id, indexes), value in zip(asked.items(), values, strict=True):
            entry = self.accept(job_id, value)
            found += entry is not None
            for index in indexes:
                entries[index] = entry
        _count(self._shared_lookups, hits=found, misses=len(asked) - found)
        return entries

    def accept(self, job_id: str, value: bytes | str | None) -> CacheEntry | None:
        """The entry a value read from `key(job_id)` holds (None: no value, or one this
        version cannot read, both misses); a terminal snapshot goes to the memo, as one read
        by `get` does. For readers of the key other than this class (`RedisFetchClaims`)."""
        if value is None:
            return None
        known = None if self._decoded is None else self._decoded.get(job_id)
        if known is not None and known[0] == value:
            # The very bytes decoded last time: the same entry (a Job is immutable).
            entry: CacheEntry | None = known[1]
        else:
            entry = self._decode(job_id, value)
            self._keep_decoded(job_id, value, entry)
        if entry is not None and entry.job is not None:
            if self._ttls.expired(entry.job, self._clock()):
                # Redis counts the key's life from the SET, a little after the fetch: past the
                # snapshot's own expiry, which every process reads the same, it is a miss.
                return None
            self._remember(entry.job)
        return entry

    def peek_finished(self, job_id: str) -> Job | None:
        """A terminal snapshot from the in-process memo, else None; no I/O."""
        job = self._recall(job_id)
        if job is not None:
            self._memory_lookups.hits.inc()
        return job

    async def put(self, job_id: str, job: Job | None) -> None:
        """Store `job` (None: not found) for the ttl its state calls for; a ttl of 0 deletes
        any older value, so it cannot outlive this newer answer.

        Raises `BackendUnavailable` when Redis does not answer (the memo is updated anyway),
        and ValueError for a job that carries no upstream body (`Job.raw`) to store.
        """
        if job is not None and not job.raw:
            raise ValueError(
                f"Expected a snapshot of job {job_id} decoded from an upstream body, received "
                "one without Job.raw: a shared cache stores the body, not the object."
            )
        ttl = self._ttls.for_job(job)
        if self._memo is not None:
            self._memo.pop(job_id, None)
        if job is not None and ttl > 0:
            self._remember(job)
        key = self.key(job_id)
        try:
            if ttl <= 0:
                await self._redis.delete(key)
            else:
                # Whole milliseconds, rounded up: a ttl of 0.0004 s must still store something.
                await self._redis.set(key, _encode(job), px=max(1, math.ceil(ttl * 1000)))
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc

    # --- the in-process memo of terminal snapshots ------------------------------------------

    def _recall(self, job_id: str) -> Job | None:
        memo = self._memo
        # An empty memo answers at once: cachetools' miss raises and catches a KeyError under a
        # timer context, a few microseconds that every running job polled paid two or three
        # times per request. (Cache.__len__: the timed caches' own len() expires entries first.)
        return memo.get(job_id) if memo is not None and Cache.__len__(memo) else None

    def _remember(self, job: Job) -> None:
        if self._memo is None or not job.state.is_terminal:
            return
        if self._clock() < self._memo_expiry(job.id, job, 0.0):
            self._memo[job.id] = job

    def _memo_expiry(self, job_id: str, job: Job, now: float) -> float:
        # The shared copy was stored when the job was fetched and lives `terminal` seconds:
        # the local one must not outlive it.
        return job.fetched_at + self._ttls.terminal

    # --- the stored value -------------------------------------------------------------------

    def _keep_decoded(self, job_id: str, value: bytes | str, entry: CacheEntry | None) -> None:
        if entry is None:
            # Unreadable: decoding it again costs a debug line, and keeps it a miss.
            if self._decoded is not None:
                self._decoded.pop(job_id, None)
            return
        if self._decoded is not None:
            self._decoded[job_id] = (value, entry)

    def _decode(self, job_id: str, value: bytes | str) -> CacheEntry | None:
        """The entry `value` holds, or None (a miss) for a value this version cannot read."""
        try:
            return self._parse(job_id, value)
        except _Unreadable as exc:
            # Debug only: after a format change every old value lands here once, as expected.
            logger.debug("Cached snapshot of job %s ignored: %s", job_id, exc)
            return None

    def _parse(self, job_id: str, value: bytes | str) -> CacheEntry:
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):
            raise _Unreadable("it is not JSON") from None
        if not isinstance(document, dict):
            raise _Unreadable("it is not a JSON object")
        version = document.get("v")
        # `True == 1` in Python: the version must be the integer itself.
        if type(version) is not int or version != FORMAT_VERSION:
            raise _Unreadable(f"its version is {version!r}, expected {FORMAT_VERSION}")
        if document.get("notFound") is True:
            return CacheEntry(None)
        fetched_at = document.get("fetchedAt")
        if not isinstance(fetched_at, int | float) or isinstance(fetched_at, bool):
            raise _Unreadable("it has no numeric fetchedAt")
        if not math.isfinite(fetched_at):
            raise _Unreadable("its fetchedAt is not finite")
        raw = document.get("raw")
        if not isinstance(raw, dict) or not all(
            isinstance(name, str) and isinstance(text, str) for name, text in raw.items()
        ):
            raise _Unreadable("its raw body is not an object of strings")
        job = decode_job(raw, fetched_at=float(fetched_at), region=self._region)
        if job is None or job.id != job_id:
            raise _Unreadable("its raw body does not describe this job")
        return CacheEntry(job)


def _count(lookups: Lookups, *, hits: int, misses: int) -> None:
    if hits:
        lookups.hits.inc(hits)
    if misses:
        lookups.misses.inc(misses)


class _Unreadable(Exception):
    """A stored value this version cannot read; the message says why."""


def _encode(job: Job | None) -> str:
    document: dict[str, object]
    if job is None:
        document = {"v": FORMAT_VERSION, "notFound": True}
    else:
        document = {"v": FORMAT_VERSION, "fetchedAt": job.fetched_at, "raw": dict(job.raw)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
