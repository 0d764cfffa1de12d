"""`JobFetcher`: job snapshots for many requests at once, for as few upstream calls as possible.

One fetcher serves the whole process. For each id it asks, in order:

    validate the id        -> InvalidJobId, no call
    snapshot cache         -> a fresh snapshot (or a fresh "not found"), no call
    in-flight map          -> an id being fetched for ANY request is joined: one call per id at
                              a time, duplicates within one request included
    budget slot            -> the account-wide rate limit and the process's calls in flight,
                              shared fairly between requesters; may shed load (BudgetExhausted)
    source.query_job       -> one upstream call; retryable errors go round again, budget included
    cache.put              -> the answer (never a failure) is kept for the ttl its state allows

Deadlines, cancellation and coalescing. Every `get_many` call has its own deadline and stops
waiting at it: an id still pending then is a `BudgetExhausted` with a retry hint, whatever the
fetch behind it is doing. A fetch is shared by all its waiters; when the last one leaves (timed
out, or cancelled because its request went away), the fetch is cancelled if it is still waiting
(for a budget slot, or between retries), so an abandoned fetch never spends budget. A fetch
whose call is under way is left to finish: the call is paid for, and its answer goes to the
cache.

The budget is asked with the latest deadline of the fetch's waiters when it asks. A waiter
that joins later with a later deadline raises the fetch's deadline; if the budget then gives up
at the older deadline, the fetch asks again with the newer one (at the back of the queue, which
is where that later waiter would have queued anyway). We chose this over a deadline that the
budget re-reads while waiting because it keeps the `Budget` protocol a plain `slot(deadline)`,
which a Redis implementation can honour in one atomic script. The fetch's deadline never goes
down when a waiter leaves; it need not, since the fetch is dropped when the last waiter leaves,
so in effect it waits exactly as long as its most patient current waiter.

Fairness. Each `get_many` call names its `requester` (the loader passes one token per GraphQL
request), and every budget slot a fetch asks for is asked under the key of the requester that
started it: its retries too, and requests that join it share it. The budget serves keys
round-robin, so a request for one id is not queued behind another request's thousand. There is
no other queue in front of the budget's (the per-process limit on calls in flight is the
budget's `max_in_flight`), so nothing undoes that order. When a call inside a slot is
throttled by the upstream, the fetcher tells the budget (`Budget.throttled`), which slows down.

Results: one entry per id, in order: a `Job`, None (no such job), a `GatewayError` (that id
failed; the others are served), or, only for a bug, the unexpected exception itself (logged here
with its traceback; the API layer masks it). `get_many` raises only when it is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from gateway import errors
from gateway.jobs.backend import BackendUnavailable
from gateway.jobs.budget import Budget
from gateway.jobs.cache import CacheEntry, SnapshotCache
from gateway.jobs.ids import validate_job_id
from gateway.jobs.model import Job
from gateway.jobs.retry import RetryPolicy

__all__ = ["FetchResult", "FetcherStats", "JobFetcher", "JobSource", "RetryPolicy"]

logger = logging.getLogger(__name__)

#: What `get_many` gives for one id: a snapshot, None (no such job), a `GatewayError` for an
#: expected failure, or another `Exception` for a bug (to be masked by the API layer).
FetchResult: TypeAlias = "Job | Exception | None"


class JobSource(Protocol):
    """The upstream, as the fetcher needs it (`gateway.mps.client.MpsClient` is one)."""

    async def query_job(self, job_id: str) -> Job | None:
        """One upstream call, no retries: the snapshot, or None when there is no such job.
        Raises `errors.UpstreamError` subclasses."""
        ...


@dataclass(frozen=True, slots=True)
class FetcherStats:
    """Counters since the fetcher was made (and `in_flight`, a gauge)."""

    #: Ids answered from the cache.
    cache_hits: int
    #: Ids missing from the cache (each joined a fetch, or started one).
    cache_misses: int
    #: Calls made to the source (retries included).
    upstream_calls: int
    #: Ids that joined a fetch another request had started.
    coalesced: int
    #: Repeats of an id within one `get_many` call (served by the same lookup).
    duplicates: int
    #: Retries after a retryable error.
    retries: int
    #: Fetches that ended in an error (given to their waiters, not cached).
    failures: int
    #: Ids rejected by `validate_job_id`.
    invalid_ids: int
    #: Ids whose waiter reached its deadline before the fetch ended.
    timeouts: int
    #: Fetches cancelled before spending budget because nobody waited for them any more.
    abandoned: int
    #: Fetches under way now.
    in_flight: int


@dataclass(slots=True)
class _Counters:
    cache_hits: int = 0
    cache_misses: int = 0
    upstream_calls: int = 0
    coalesced: int = 0
    duplicates: int = 0
    retries: int = 0
    failures: int = 0
    invalid_ids: int = 0
    timeouts: int = 0
    abandoned: int = 0


class _Fetch:
    """One fetch of one id, shared by every request waiting for that id."""

    __slots__ = ("cancellable", "deadline", "future", "job_id", "key", "task", "waiters")

    def __init__(
        self,
        job_id: str,
        deadline: float,
        key: Hashable,
        future: asyncio.Future[FetchResult],
    ) -> None:
        self.job_id = job_id
        #: The budget key of the requester that started the fetch (joiners share it).
        self.key = key
        #: The latest deadline of any waiter that joined: what the budget is asked with.
        self.deadline = deadline
        #: Resolved with the outcome (never with an exception, never cancelled on purpose).
        self.future = future
        self.waiters = 1
        #: True while the fetch only waits (budget, backoff) and may be dropped.
        self.cancellable = True
        self.task: asyncio.Task[None] | None = None


class JobFetcher:
    """Fetches job snapshots for all requests of the process; see the module docstring.

    `clock` must be the clock of `budget` and of the deadlines passed to `get_many`; `sleep`
    waits on that clock (retry backoff, deadlines). Both are injectable so tests move time by
    hand. `uniform` draws the retry jitter.

    `concurrency` is accepted and ignored: the limit on calls in flight moved into the budget
    (`max_in_flight`; `LocalBudget.from_settings` reads `upstream_concurrency`), so that no FIFO
    stands in front of its fair queue. It goes once no caller passes it.
    """

    def __init__(
        self,
        source: JobSource,
        budget: Budget,
        cache: SnapshotCache,
        *,
        concurrency: int | None = None,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._source = source
        self._budget = budget
        self._cache = cache
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._in_flight: dict[str, _Fetch] = {}
        # The loop keeps only weak references to tasks: hold them until they end.
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts = _Counters()

    def stats(self) -> FetcherStats:
        c = self._counts
        return FetcherStats(
            cache_hits=c.cache_hits,
            cache_misses=c.cache_misses,
            upstream_calls=c.upstream_calls,
            coalesced=c.coalesced,
            duplicates=c.duplicates,
            retries=c.retries,
            failures=c.failures,
            invalid_ids=c.invalid_ids,
            timeouts=c.timeouts,
            abandoned=c.abandoned,
            in_flight=len(self._in_flight),
        )

    def peek_finished(self, job_id: str) -> Job | None:
        """A fresh final snapshot of `job_id` from this process's memory, else None: no I/O,
        no budget, no waiting (see `SnapshotCache.peek_finished`)."""
        job = self._cache.peek_finished(job_id)
        if job is not None:
            self._counts.cache_hits += 1
        return job

    async def get_many(
        self,
        job_ids: Sequence[str],
        deadline: float,
        *,
        requester: Hashable | None = None,
    ) -> list[FetchResult]:
        """One result per id of `job_ids`, in the same order, by `deadline` (on the clock).

        `requester` is the budget key of the fetches this call starts (None: a key of its own,
        for this call alone). Never raises for one id's failure; raises only CancelledError
        when cancelled, after leaving every fetch it joined.
        """
        key: Hashable = object() if requester is None else requester
        results: list[FetchResult] = [None] * len(job_ids)
        positions: dict[str, list[int]] = {}
        for index, job_id in enumerate(job_ids):
            try:
                validate_job_id(job_id)
            except errors.InvalidJobId as exc:
                self._counts.invalid_ids += 1
                results[index] = exc
                continue
            seen = positions.get(job_id)
            if seen is None:
                positions[job_id] = [index]
            else:
                seen.append(index)
                self._counts.duplicates += 1

        joined: dict[str, _Fetch] = {}
        try:
            for job_id, indexes in positions.items():
                hit = await self._cached(job_id)
                if hit is not None:
                    for index in indexes:
                        results[index] = hit.job
                    continue
                # No await between the cache miss and the join: with a local cache, no fetch of
                # this id can complete in between.
                joined[job_id] = self._join(job_id, deadline, key)
            if joined:
                await self._wait(joined.values(), deadline)
        except BaseException:
            # Cancelled: the request went away. Leave what we joined, so that fetches nobody
            # waits for stop before they spend budget.
            for fetch in joined.values():
                if not fetch.future.done():
                    self._leave(fetch)
            raise

        for job_id, fetch in joined.items():
            outcome = self._outcome(fetch)
            for index in positions[job_id]:
                results[index] = outcome
        return results

    # --- per request ------------------------------------------------------------------------

    async def _cached(self, job_id: str) -> CacheEntry | None:
        try:
            hit = await self._cache.get(job_id)
        except Exception:
            # A broken cache (a shared one can be unreachable) costs calls, not answers.
            logger.exception("Snapshot cache lookup of job %s failed; fetching it", job_id)
            hit = None
        if hit is None:
            self._counts.cache_misses += 1
        else:
            self._counts.cache_hits += 1
        return hit

    def _join(self, job_id: str, deadline: float, key: Hashable) -> _Fetch:
        fetch = self._in_flight.get(job_id)
        if fetch is not None:
            self._counts.coalesced += 1
            fetch.waiters += 1
            fetch.deadline = max(fetch.deadline, deadline)
            return fetch
        fetch = _Fetch(job_id, deadline, key, asyncio.get_running_loop().create_future())
        self._in_flight[job_id] = fetch
        task = asyncio.create_task(self._run(fetch), name=f"fetch job {job_id}")
        fetch.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(fetch, done))
        return fetch

    def _leave(self, fetch: _Fetch) -> None:
        """A waiter stops waiting for `fetch`; the last one out cancels it while it only waits."""
        fetch.waiters -= 1
        if fetch.waiters > 0 or not fetch.cancellable:
            return
        # Out of the map at once, so that a request arriving now starts a fresh fetch instead
        # of joining one that is being cancelled.
        if self._in_flight.get(fetch.job_id) is fetch:
            del self._in_flight[fetch.job_id]
        if fetch.task is not None:
            fetch.task.cancel()
        self._counts.abandoned += 1

    async def _wait(self, fetches: Iterable[_Fetch], deadline: float) -> None:
        """Return when every fetch has ended or `deadline` has come, whichever is first."""
        pending = [fetch.future for fetch in fetches if not fetch.future.done()]
        remaining = deadline - self._clock()
        if not pending or remaining <= 0:
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = len(pending)

        def one_done(_: object) -> None:
            nonlocal left
            left -= 1
            if left == 0 and not woken.done():
                woken.set_result(None)

        def timer_done(timer: asyncio.Task[None]) -> None:
            if not timer.cancelled() and timer.exception() is None and not woken.done():
                woken.set_result(None)

        # One timer per request, not per id: a request of 100 ids costs one extra task.
        timer = None
        if not math.isinf(remaining):
            timer = asyncio.ensure_future(self._sleep(remaining))
            timer.add_done_callback(timer_done)
        for future in pending:
            future.add_done_callback(one_done)
        try:
            await woken
        finally:
            if timer is not None:
                timer.cancel()
            for future in pending:
                future.remove_done_callback(one_done)

    def _outcome(self, fetch: _Fetch) -> FetchResult:
        future = fetch.future
        if future.done() and not future.cancelled():
            return future.result()
        if not future.done():
            self._leave(fetch)
            self._counts.timeouts += 1
        # Deadline reached (or the fetch was cancelled from outside, at shutdown): tell the
        # client when the budget could next serve a newcomer.
        retry_after = self._budget.snapshot().next_free_in
        return errors.BudgetExhausted(retry_after=retry_after)

    # --- per fetch --------------------------------------------------------------------------

    async def _run(self, fetch: _Fetch) -> None:
        outcome: FetchResult
        try:
            outcome = await self._fetch(fetch)
        except errors.GatewayError as exc:
            self._counts.failures += 1
            outcome = exc
        except Exception as exc:
            # A bug. It must not hang the waiters: they get the exception itself, and the API
            # layer masks it.
            self._counts.failures += 1
            logger.exception("Fetching job %s failed unexpectedly", fetch.job_id)
            outcome = exc
        # Leave the map and resolve in one step: a request never joins a finished fetch.
        self._end(fetch)
        fetch.future.set_result(outcome)

    def _task_done(self, fetch: _Fetch, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not fetch.future.done():
            # Cancelled (abandoned, or at shutdown), possibly before it even started: whoever
            # still waits must not hang.
            self._end(fetch)
            fetch.future.cancel()

    def _end(self, fetch: _Fetch) -> None:
        if self._in_flight.get(fetch.job_id) is fetch:
            del self._in_flight[fetch.job_id]

    async def _fetch(self, fetch: _Fetch) -> Job | None:
        """Call the source until an answer, a final error, or no time left for a retry."""
        attempt = 0
        while True:
            try:
                job = await self._call(fetch)
            except errors.BudgetExhausted:
                raise  # no slot before the deadline: retrying cannot help
            except errors.GatewayError as exc:
                if not self._retry.should_retry(exc, attempt):
                    raise
                delay = self._retry.delay(exc, attempt, self._uniform)
                if self._clock() + delay >= fetch.deadline:
                    raise  # a retry could not end before the deadline: the last error stands
                self._counts.retries += 1
                attempt += 1
                logger.debug(
                    "Job %s: %s, retry %s in %.3f s", fetch.job_id, exc.code, attempt, delay
                )
                fetch.cancellable = True
                await self._sleep(delay)
                continue
            try:
                await self._cache.put(fetch.job_id, job)
            except Exception:
                logger.exception("Snapshot cache store of job %s failed", fetch.job_id)
            return job

    async def _call(self, fetch: _Fetch) -> Job | None:
        """One upstream call, inside one budget slot asked under the fetch's key."""
        while True:
            asked = fetch.deadline
            entered = False
            try:
                async with self._budget.slot(asked, key=fetch.key):
                    entered = True
                    # From here the call is paid for: the fetch finishes even if nobody
                    # waits any more, and its answer goes to the cache.
                    fetch.cancellable = False
                    self._counts.upstream_calls += 1
                    return await self._source.query_job(fetch.job_id)
            except errors.UpstreamThrottled:
                # The budget held, yet the upstream throttled: someone else uses the account.
                await self._report_throttled()
                raise
            except errors.BudgetExhausted:
                if entered or fetch.deadline <= asked:
                    raise
                # A waiter with a later deadline joined while this fetch queued: ask again
                # for that one.

    async def _report_throttled(self) -> None:
        try:
            await self._budget.throttled()
        except BackendUnavailable as exc:
            # The report is advice: without it the budget keeps its rate, and the retry still
            # goes through the budget. The caller must get the upstream's answer, not this.
            logger.warning("Could not report upstream throttling to the budget: %s", exc.reason)
