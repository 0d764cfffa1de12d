"""Test doubles for the loading layer: a manual clock, a fake upstream, job snapshots.

Plain classes, no mocks: each does what a test tells it to and records what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from gateway.budget import LocalBudget
from gateway.jobs.cache import CacheEntry, LocalSnapshotCache
from gateway.jobs.claims import ClaimOutcome, FetchClaims, Held
from gateway.jobs.fetcher import FetchResult, JobFetcher
from gateway.jobs.retry import RetryPolicy
from gateway.model import Job, JobState

FOREVER = float("inf")


def make_job(job_id: str, state: JobState = JobState.SUCCESS) -> Job:
    """A snapshot of job `job_id` in `state`, with every other field empty."""
    return Job(
        id=job_id,
        state=state,
        raw_state=state.value,
        function_name="VideoH2V",
        input_url=None,
        input=None,
        output_url=None,
        output=None,
        pipeline_id=None,
        params=None,
        user_data=None,
        result=None,
        request_id=f"request-{job_id}",
        fetched_at=0.0,
    )


async def settle(rounds: int = 50) -> None:
    """Let every task that can run, run (chains of wake-ups take one loop turn per link)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class ManualTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to, with timers that fire as it moves.

    Pass the clock itself as `clock`, `clock.call_later` as a budget's timer function and
    `clock.sleep` as a fetcher's sleep.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, ManualTimer]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(delay, wake)
        try:
            await future
        finally:
            timer.cancel()

    def next_due(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def fire_due(self) -> int:
        """Fire the timers due by now, without letting tasks run. Returns how many fired."""
        fired = 0
        while (due := self.next_due()) is not None and due <= self.now:
            _, _, timer = heapq.heappop(self._timers)
            timer.callback()
            fired += 1
        return fired

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing timers in order, each at its own time, and
        letting tasks run after each."""
        target = self.now + seconds
        await settle()
        while (due := self.next_due()) is not None and due <= target:
            self.now = max(self.now, due)
            self.fire_due()
            await settle()
        self.now = target
        await settle()

    async def run_until_idle(self, horizon: float = 10_000.0) -> None:
        """Jump from timer to timer until none is left (or time passes `horizon` seconds)."""
        end = self.now + horizon
        await settle()
        while (due := self.next_due()) is not None and due <= end:
            await self.advance(max(0.0, due - self.now))


class FakeSource:
    """A fake upstream (`JobSource`): knows some jobs, and fails, throttles or stalls on demand.

    - `jobs`: the snapshots it knows; any other id is "not found" (None);
    - `failures[job_id]`: exceptions raised by the next calls for that id, one per call;
    - `latency`: seconds each call takes on `sleep` (the test's clock);
    - `gate`: when set, calls wait for it to open before answering.
    Records `calls` (ids in call order), `active` and `max_active` (concurrent calls) and
    `spans` (start, end) on `clock`.
    """

    def __init__(
        self,
        jobs: dict[str, Job] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.jobs: dict[str, Job] = dict(jobs or {})
        self.failures: defaultdict[str, list[BaseException]] = defaultdict(list)
        self.latency = latency
        self.gate: asyncio.Event | None = None
        self.calls: list[str] = []
        self.spans: list[tuple[float, float]] = []
        self.active = 0
        self.max_active = 0
        #: Calls under way per id, and the most seen at once for any one id.
        self.active_per_id: defaultdict[str, int] = defaultdict(int)
        self.max_active_per_id = 0
        self._clock = clock or (lambda: 0.0)
        self._sleep = sleep

    def add(self, *jobs: Job) -> None:
        for job in jobs:
            self.jobs[job.id] = job

    def fail(self, job_id: str, *errors: BaseException) -> None:
        self.failures[job_id].extend(errors)

    async def query_job(
        self, job_id: str, *, held: AbstractAsyncContextManager[object] | None = None
    ) -> Job | None:
        async with held or contextlib.nullcontext():
            return await self._answer(job_id)

    async def _answer(self, job_id: str) -> Job | None:
        self.calls.append(job_id)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.active_per_id[job_id] += 1
        self.max_active_per_id = max(self.max_active_per_id, self.active_per_id[job_id])
        start = self._clock()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.latency and self._sleep is not None:
                await self._sleep(self.latency)
            else:
                await asyncio.sleep(0)
            pending = self.failures.get(job_id)
            if pending:
                raise pending.pop(0)
            return self.jobs.get(job_id)
        finally:
            self.active -= 1
            self.active_per_id[job_id] -= 1
            self.spans.append((start, self._clock()))


class RecordingCache(LocalSnapshotCache):
    """A `LocalSnapshotCache` that logs each call to `log`: "get_many a,b", "put a"... (it never
    suspends either: recording adds no await)."""

    def __init__(
        self,
        log: list[str],
        *,
        terminal_ttl: float,
        running_ttl: float,
        not_found_ttl: float,
        max_entries: int,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(
            terminal_ttl=terminal_ttl,
            running_ttl=running_ttl,
            not_found_ttl=not_found_ttl,
            max_entries=max_entries,
            clock=clock,
        )
        self.log = log

    async def get(self, job_id: str) -> CacheEntry | None:
        self.log.append(f"get {job_id}")
        return await super().get(job_id)

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        self.log.append(f"get_many {','.join(job_ids)}")
        return await super().get_many(job_ids)

    async def put(self, job_id: str, job: Job | None) -> None:
        self.log.append(f"put {job_id}")
        await super().put(job_id, job)


class FakeLease:
    def __init__(self, claims: FakeClaims, job_id: str) -> None:
        self.claims = claims
        self.job_id = job_id

    async def release(self) -> None:
        self.claims.log.append(f"release {self.job_id}")
        self.claims.held.discard(self.job_id)


class FakeClaims:
    """The claims of a fleet as one process sees them (`FetchClaims`), logging to `log`.

    - `elsewhere`: ids another process holds (this one gets `Held(poll)` for them);
    - `shared`: answers another process stored (a claim of such an id gets the entry);
    - `gate`: when set, each claim round trip waits for it; `failure`: raised by each claim.
    Records `log` ("claim a", "release a"; shared with the rig's cache), `held` (this
    process's leases not released yet) and `attempts` per id.
    """

    def __init__(self, log: list[str], poll: float = 0.025) -> None:
        self.log = log
        self.poll = poll
        self.elsewhere: set[str] = set()
        self.shared: dict[str, CacheEntry] = {}
        self.held: set[str] = set()
        self.attempts: defaultdict[str, int] = defaultdict(int)
        self.held_answers: defaultdict[str, int] = defaultdict(int)
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None

    def answer_elsewhere(self, job_id: str, job: Job | None) -> None:
        """The other process stores its answer and releases its claim."""
        self.shared[job_id] = CacheEntry(job)
        self.elsewhere.discard(job_id)

    async def claim(self, job_id: str, *, attempt: int = 0) -> ClaimOutcome:
        assert attempt == self.held_answers[job_id], "attempt counts the Held answers"
        self.attempts[job_id] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        if job_id in self.shared:
            return self.shared[job_id]
        if job_id in self.elsewhere:
            self.held_answers[job_id] += 1
            return Held(retry_in=self.poll)
        self.log.append(f"claim {job_id}")
        self.held.add(job_id)
        return FakeLease(self, job_id)


NO_RETRY = RetryPolicy(max_retries=0, base_delay=0.0, max_delay=0.0)


@dataclass
class Rig:
    """A fetcher wired to a fake source, a budget and a cache, all on one manual clock."""

    limit: int = 100
    concurrency: int = 8
    retry: RetryPolicy = NO_RETRY
    clock: ManualClock = field(default_factory=ManualClock)
    fetcher_type: type[JobFetcher] = JobFetcher
    #: Give the fetcher `FakeClaims` (as a process sharing a cache would have).
    with_claims: bool = False

    def __post_init__(self) -> None:
        #: The cache's and the claims' calls, in order.
        self.log: list[str] = []
        self.claims = FakeClaims(self.log) if self.with_claims else None
        claims: FetchClaims | None = self.claims
        self.source = FakeSource(clock=self.clock, sleep=self.clock.sleep)
        self.budget = LocalBudget(
            self.limit,
            1.0,
            max_in_flight=self.concurrency,
            clock=self.clock,
            call_later=self.clock.call_later,
        )
        self.cache = RecordingCache(
            self.log,
            terminal_ttl=100.0,
            running_ttl=1.0,
            not_found_ttl=5.0,
            max_entries=1000,
            clock=self.clock,
        )
        self.fetcher = self.fetcher_type(
            self.source,
            self.budget,
            self.cache,
            claims=claims,
            retry=self.retry,
            clock=self.clock,
            sleep=self.clock.sleep,
            uniform=lambda low, high: high,
        )

    def deadline(self, seconds: float = 10.0) -> float:
        return self.clock() + seconds

    def start(
        self, ids: list[str], seconds: float = 10.0, *, requester: object = None
    ) -> asyncio.Task[list[FetchResult]]:
        return asyncio.create_task(
            self.fetcher.get_many(ids, self.deadline(seconds), requester=requester)
        )

    async def hold_budget(self, gate: asyncio.Event) -> asyncio.Task[None]:
        """Take one budget slot until `gate` opens (another caller's call, from the budget's
        point of view)."""

        async def hold() -> None:
            async with self.budget.slot(FOREVER):
                await gate.wait()

        task = asyncio.create_task(hold())
        await settle()
        return task
