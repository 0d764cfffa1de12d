"""`JobFetcher`: job snapshots for many requests at once, for as few upstream calls as possible.

One fetcher serves the whole process. For each id: validate it (no call for a malformed one),
read the snapshot cache (one `get_many` for all the ids of a request), join a fetch of that id
under way for any request, claim the id fleet-wide (with a shared cache: another process's
fetch is waited for instead), take a budget slot under the requester's key, call the upstream
(retrying what may succeed, each retry in a new slot), cache the answer and release the claim.
`docs/architecture.md` section 4 says why each step is where it is.

Guarantees: one result per id, in order: a `Job`, None (no such job), a `GatewayError` (that id
failed; the others are served), or, only for a bug, the exception itself (logged here; the API
layer masks it). Every `get_many` stops waiting at its deadline, and a pending id then gets
what its fetch was doing: waiting for a slot, `BudgetExhausted` with when the budget could next
serve; a call (its own or another process's) under way, `DeadlineExceeded`; waiting to retry,
the last call's error. A fetch every waiter left is dropped while it only waits, so it never
spends budget for nobody; one whose call is under way finishes, and its answer is cached.
`get_many` raises only when it is cancelled. A `FetchObserver` is told of each `get_many` (a
span around it: the fetches it starts run inside) and of each wait for another process's claim.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeAlias

from gateway import errors
from gateway.budget.protocol import Budget, report_throttled
from gateway.jobs.cache import CacheEntry, SnapshotCache
from gateway.jobs.claims import NO_LEASE, ClaimOutcome, FetchClaims, Held, Lease
from gateway.jobs.ids import validate_job_id
from gateway.jobs.retry import RetryPolicy
from gateway.jobs.versions import SnapshotVersions
from gateway.model import Job
from gateway.shared.backend import BackendUnavailable

__all__ = [
    "NO_OBSERVER",
    "FetchObserver",
    "FetchResult",
    "FetcherStats",
    "JobFetcher",
    "JobSource",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

#: What `get_many` gives for one id: a snapshot, None (no such job), a `GatewayError` for an
#: expected failure, or another `Exception` for a bug (to be masked by the API layer).
FetchResult: TypeAlias = "Job | Exception | None"


class JobSource(Protocol):
    """The upstream, as the fetcher needs it (`gateway.mps.client.MpsClient` is one)."""

    async def query_job(
        self, job_id: str, *, held: AbstractAsyncContextManager[object] | None = None
    ) -> Job | None:
        """One upstream call, no retries, made inside `held` (a budget slot: the source must
        enter it around the call's round trip, and nothing else): the snapshot, or None when
        there is no such job. Raises `errors.UpstreamError` subclasses."""
        ...


class FetchObserver(Protocol):
    """Told by the fetcher of what it does for its callers. Must not raise."""

    def batch(self, ids: int) -> AbstractContextManager[object]:
        """Entered around one `get_many` of `ids` ids (a loader's batch, or a subscription's
        poll): the fetches it starts begin inside it, and carry its context along."""
        ...

    def claim_waited(self) -> None:
        """A fetch found its id claimed by another process and waits for that one's answer."""
        ...


class _Unobserved:
    __slots__ = ()

    def batch(self, ids: int) -> AbstractContextManager[object]:
        return nullcontext()

    def claim_waited(self) -> None:
        pass


#: The observer of a fetcher nobody watches.
NO_OBSERVER: FetchObserver = _Unobserved()


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
    #: Fetches that found their id claimed by another process, and waited for its answer.
    claim_waits: int
    #: Fetches answered by another process's call (found in the shared cache under the claim).
    answered_elsewhere: int
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
    claim_waits: int = 0
    answered_elsewhere: int = 0


class _Stage(enum.Enum):
    """What a fetch is doing, which says what its waiters get if their deadline comes first."""

    #: Waiting for a budget slot: BudgetExhausted, with when the budget could next serve.
    BUDGET = "budget"
    #: Its upstream call is under way: DeadlineExceeded (the answer will be cached).
    CALL = "call"
    #: Waiting for another process's call (a claim held elsewhere): DeadlineExceeded.
    CLAIM = "claim"
    #: Waiting to retry after a failed call: that call's error.
    BACKOFF = "backoff"


class _Fetch:
    """One fetch of one id, shared by every request waiting for that id."""

    __slots__ = (
        "cancellable",
        "deadline",
        "future",
        "job_id",
        "key",
        "last_error",
        "stage",
        "task",
        "waiters",
    )

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
        self.stage = _Stage.BUDGET
        #: The error of the last failed call, while waiting to retry.
        self.last_error: errors.GatewayError | None = None


class JobFetcher:
    """Fetches job snapshots for all requests of the process; see the module docstring.

    `claims` coordinates fetches with the other processes sharing `cache` (None: this process
    is alone, or its cache is its own). `clock` must be the clock of `budget` and of the
    deadlines passed to `get_many`; `sleep` waits on that clock (retry backoff, deadlines, claim
    polling). Both are injectable so tests move time by hand. `uniform` draws the retry jitter.
    `observer` watches (see `FetchObserver`).

    The limit on calls in flight is the budget's (`max_in_flight`; `LocalBudget.from_settings`
    reads `upstream_concurrency`), so that no FIFO stands in front of its fair queue.
    """

    def __init__(
        self,
        source: JobSource,
        budget: Budget,
        cache: SnapshotCache,
        *,
        claims: FetchClaims | None = None,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        observer: FetchObserver = NO_OBSERVER,
    ) -> None:
        self._source = source
        self._observer = observer
        #: The snapshot of each job this process stored last (see `SnapshotVersions`).
        self.versions = SnapshotVersions()
        self._budget = budget
        self._cache = cache
        self._claims = claims
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._in_flight: dict[str, _Fetch] = {}
        # The loop keeps only weak references to tasks: hold them until they end.
        self._tasks: set[asyncio.Task[None]] = set()
        self._releases: set[asyncio.Future[None]] = set()
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
            claim_waits=c.claim_waits,
            answered_elsewhere=c.answered_elsewhere,
            in_flight=len(self._in_flight),
        )

    async def aclose(self, *, grace: float = 1.0) -> None:
        """Stops the fetches under way (at shutdown: their waiters get `ShuttingDown`), then
        lets the claim releases finish, those the stopped fetches started included, for at
        most `grace` seconds in all, so that other processes need not wait out this process's
        leases."""
        give_up = self._clock() + grace
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # The fetches first: a cancelled fetch starts its claim's release in its `finally`.
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, give_up - self._clock()))
        if self._releases:
            await asyncio.wait(list(self._releases), timeout=max(0.0, give_up - self._clock()))

    def peek_finished(self, job_id: str) -> Job | None:
        """A fresh final snapshot of `job_id` from this process's memory, else None: no I/O,
        no budget, no waiting (see `SnapshotCache.peek_finished`)."""
        job = self._cache.peek_finished(job_id)
        if job is not None:
            self._counts.cache_hits += 1
        return job

    async def prime(self, job: Job) -> None:
        """Cache `job`, a snapshot known without a query (a job just submitted), for the ttl of
        its state, so that the next reads of it need no call. A failing cache costs that call
        later, not this caller's answer."""
        self.versions.stored(job.id, job)
        try:
            await self._cache.put(job.id, job)
        except Exception:
            logger.exception("Snapshot cache store of job %s failed", job.id)

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
        with self._observer.batch(len(job_ids)):
            return await self._get_many(job_ids, deadline, requester)

    async def _get_many(
        self, job_ids: Sequence[str], deadline: float, requester: Hashable | None
    ) -> list[FetchResult]:
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
            wanted = list(positions)
            hits = await self._cached(wanted)
            # No await from the cache's answer to the joins: with a local cache (which never
            # suspends) no fetch of these ids can have ended since the read. With a shared one,
            # see "Reading the cache, then joining" in the module docstring.
            for job_id, hit in zip(wanted, hits, strict=True):
                if hit is not None:
                    for index in positions[job_id]:
                        results[index] = hit.job
                    continue
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

    async def _cached(self, job_ids: list[str]) -> list[CacheEntry | None]:
        """The cache's entry (or None) for each of `job_ids`, in one cache call (none for no
        id); a cache that fails, or answers the wrong number of entries, is all misses."""
        if not job_ids:
            return []
        hits: list[CacheEntry | None]
        try:
            hits = await self._cache.get_many(job_ids)
            if len(hits) != len(job_ids):
                raise RuntimeError(f"Expected {len(job_ids)} cache entries, received {len(hits)}.")
        except Exception:
            # A broken cache (a shared one can be unreachable) costs calls, not answers.
            logger.exception("Snapshot cache lookup of %d jobs failed; fetching them", len(job_ids))
            hits = [None] * len(job_ids)
        misses = hits.count(None)
        self._counts.cache_misses += misses
        self._counts.cache_hits += len(hits) - misses
        return hits

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
        if future.done():
            # Cancelled from outside: the process is stopping.
            return errors.ShuttingDown() if future.cancelled() else future.result()
        self._leave(fetch)
        self._counts.timeouts += 1
        # The deadline came first; what the client is told depends on what the fetch was
        # doing, so that a slow upstream never reads as "budget problem, retry now".
        stage = fetch.stage
        if stage is _Stage.CALL:
            return errors.DeadlineExceeded(
                "its upstream call was under way", retry_after=errors.DEFAULT_RETRY_AFTER
            )
        if stage is _Stage.CLAIM:
            return errors.DeadlineExceeded(
                "another gateway process was fetching the job",
                retry_after=errors.DEFAULT_RETRY_AFTER,
            )
        if stage is _Stage.BACKOFF and fetch.last_error is not None:
            return fetch.last_error
        return errors.BudgetExhausted(retry_after=self._budget.status().next_free_in)

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
        """Claim the id, then call the source until an answer, a final error, or no time left
        for a retry; release the claim once the answer is stored."""
        claimed = await self._claim(fetch)
        if isinstance(claimed, CacheEntry):
            # Another process's answer, in the shared cache already: nothing to call or store.
            self._counts.answered_elsewhere += 1
            return claimed.job
        try:
            return await self._call_until_answered(fetch)
        finally:
            # Also when cancelled (dropped before its call): waiters elsewhere take over at
            # once, instead of when the lease expires.
            self._release(fetch.job_id, claimed)

    async def _call_until_answered(self, fetch: _Fetch) -> Job | None:
        attempt = 0
        while True:
            try:
                job = await self._call(fetch)
            except (errors.BudgetExhausted, errors.ShuttingDown):
                raise  # no slot before the deadline, or none at all: retrying cannot help
            except errors.GatewayError as exc:
                if not self._retry.should_retry(exc, attempt):
                    raise
                delay = self._retry.delay(exc, attempt, self._uniform)
                if self._clock() + delay >= fetch.deadline:
                    raise  # a retry could not end before the deadline: the last error stands
                fetch.cancellable = True
                fetch.stage = _Stage.BACKOFF
                fetch.last_error = exc
                if fetch.waiters <= 0:
                    # Everyone left while the call was under way: a retry would spend budget
                    # for nobody. The last error stands (and is not cached).
                    self._counts.abandoned += 1
                    raise
                self._counts.retries += 1
                attempt += 1
                logger.debug(
                    "Job %s: %s, retry %s in %.3f s", fetch.job_id, exc.code, attempt, delay
                )
                await self._sleep(delay)
                fetch.stage = _Stage.BUDGET
                continue
            self.versions.stored(fetch.job_id, job)
            try:
                await self._cache.put(fetch.job_id, job)
            except Exception:
                logger.exception("Snapshot cache store of job %s failed", fetch.job_id)
            return job

    async def _claim(self, fetch: _Fetch) -> Lease | CacheEntry:
        """A lease (`NO_LEASE` without claims), or another process's answer, waiting while
        another process holds the claim; see "Claims" in the module docstring."""
        claims = self._claims
        if claims is None:
            return NO_LEASE
        held = 0
        while True:
            outcome = await self._claim_once(claims, fetch.job_id, held)
            if not isinstance(outcome, Held):
                return outcome
            if held == 0:
                self._counts.claim_waits += 1
                self._observer.claim_waited()
            held += 1
            remaining = fetch.deadline - self._clock()
            if remaining <= 0:
                # The holder's answer did not come in time; the waiters have left by now.
                raise errors.DeadlineExceeded(
                    "another gateway process was fetching the job", retry_after=outcome.retry_in
                )
            fetch.stage = _Stage.CLAIM
            try:
                await self._sleep(min(outcome.retry_in, remaining))
            finally:
                fetch.stage = _Stage.BUDGET

    async def _claim_once(self, claims: FetchClaims, job_id: str, attempt: int) -> ClaimOutcome:
        """One claim attempt. It runs to its end even if this fetch is cancelled meanwhile, so
        that a lease it took is released rather than left for other processes to wait out."""
        claiming = asyncio.ensure_future(claims.claim(job_id, attempt=attempt))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            if claiming.done():
                self._release_taken(job_id, claiming)
            else:
                claiming.add_done_callback(lambda done: self._release_taken(job_id, done))
            raise
        except Exception as exc:
            # `FailoverClaims` turns an unreachable backend into NO_LEASE; this is anything
            # else (a bare backend, a bug): a claim must never cost the answer.
            if isinstance(exc, BackendUnavailable):
                logger.warning("Claiming job %s failed (%s); fetching it", job_id, exc.reason)
            else:
                logger.exception("Claiming job %s failed unexpectedly; fetching it", job_id)
            return NO_LEASE

    def _release_taken(self, job_id: str, attempt: asyncio.Future[ClaimOutcome]) -> None:
        if attempt.cancelled() or attempt.exception() is not None:
            return
        outcome = attempt.result()
        if not isinstance(outcome, CacheEntry | Held):
            self._release(job_id, outcome)

    def _release(self, job_id: str, lease: Lease) -> None:
        """Release `lease` in the background: nobody waits for it (the waiters here have their
        answer, those elsewhere read the cache), and it must survive this fetch's cancellation."""
        if lease is NO_LEASE:
            return
        release = asyncio.ensure_future(self._release_quietly(job_id, lease))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def _release_quietly(self, job_id: str, lease: Lease) -> None:
        try:
            await lease.release()
        except BackendUnavailable as exc:
            # The claim expires on its own; waiters elsewhere take over then.
            logger.debug("Releasing the claim on job %s failed: %s", job_id, exc.reason)
        except Exception:
            logger.exception("Releasing the claim on job %s failed unexpectedly", job_id)

    async def _call(self, fetch: _Fetch) -> Job | None:
        """One upstream call, inside one budget slot asked under the fetch's key (the source
        enters it when the request is ready to go, and leaves it when the answer is in)."""
        while True:
            slot = _CallSlot(self, fetch, self._budget.slot(fetch.deadline, key=fetch.key))
            try:
                job = await self._source.query_job(fetch.job_id, held=slot)
            except errors.UpstreamThrottled:
                # The budget held, yet the upstream throttled: someone else uses the account.
                await report_throttled(self._budget, logger)
                raise
            except errors.BudgetExhausted:
                if slot.entered or fetch.deadline <= slot.asked:
                    raise
                # A waiter with a later deadline joined while this fetch queued: ask again
                # for that one.
                continue
            if not slot.entered:
                raise RuntimeError(
                    f"Expected the source to call the upstream for job {fetch.job_id} inside "
                    "its budget slot, received an answer made outside it."
                )
            return job


class _CallSlot:
    """The budget slot of one call, as the fetcher hands it to the source: on entry the call is
    paid for (the fetch finishes even if nobody waits any more, and its answer is cached)."""

    __slots__ = ("_fetch", "_fetcher", "_inner", "asked", "entered")

    def __init__(
        self, fetcher: JobFetcher, fetch: _Fetch, inner: AbstractAsyncContextManager[None]
    ) -> None:
        self._fetcher = fetcher
        self._fetch = fetch
        self._inner = inner
        #: The deadline the budget was asked with.
        self.asked = fetch.deadline
        self.entered = False

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()
        self.entered = True
        fetch = self._fetch
        fetch.cancellable = False
        fetch.stage = _Stage.CALL
        self._fetcher._counts.upstream_calls += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)
