"""Behaviour of the upstream call budget.

The behaviour tests take a `harness` fixture, parametrized by implementation: it makes budgets
and moves time. For `local`, time is a `ManualClock` and the window 1 s, so every instant is
exact. For `redis`, a `RedisBudget` on the real Redis (each budget under a key prefix of its
own), time is real and the window short (0.2 s): only the tests of order and counts run on it
(tests of exact instants are marked `EXACT_TIMES`). Tests state times in windows (`w`).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.budget import QUERY_JOB, Budget, LocalBudget, RedisBudget
from gateway.budget.aimd import DEFAULT_CEILING_RECOVERY_TIME, DEFAULT_RECOVERY_RATE
from gateway.settings import GatewaySettings
from gateway.shared.backend import RedisClient
from tests.jobs.jobfakes import FOREVER, ManualClock, settle
from tests.jobs.redisutil import delete_prefix, unique_prefix
from tests.support.redis import SHARED_BACKENDS, connect_backend


class Harness(Protocol):
    """Makes budgets of one implementation and moves their time."""

    #: Seconds of one budget window.
    window: float
    #: How far (s) a measured instant may be from the one the test states.
    tolerance: float

    #: Windows a behaviour test may let pass (a long stretch, but a few seconds of real time).
    long_stretch: int

    def make(
        self,
        limit: int,
        *,
        max_in_flight: int | None = None,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
    ) -> Budget: ...

    def now(self) -> float: ...

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass, with everything due meanwhile run."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` inside a task (a call's duration)."""

    async def settle(self) -> None:
        """Let everything that can run now, run."""

    async def drain(self) -> None:
        """Let time pass until nothing is left to do."""


class ManualHarness:
    """A `LocalBudget` on a manual clock: exact instants, no sleeping."""

    window = 1.0
    tolerance = 1e-9
    long_stretch = 120

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def make(
        self,
        limit: int,
        *,
        max_in_flight: int | None = None,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
    ) -> Budget:
        return LocalBudget(
            limit,
            self.window,
            max_in_flight=max_in_flight,
            recovery_rate=recovery_rate,
            ceiling_recovery_time=ceiling_recovery_time,
            clock=self.clock,
            call_later=self.clock.call_later,
        )

    def now(self) -> float:
        return self.clock()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)

    async def settle(self) -> None:
        await settle()

    async def drain(self) -> None:
        await self.clock.run_until_idle()


class RedisHarness:
    """`RedisBudget`s on the real Redis and real time; each budget has a prefix of its own."""

    window = 0.2
    # Timers, a Redis round trip and a loaded CI machine: 50 ms either way.
    tolerance = 0.05
    long_stretch = 20  # 4 s

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.budgets: list[RedisBudget] = []
        self.prefixes: list[str] = []

    def make(
        self,
        limit: int,
        *,
        max_in_flight: int | None = None,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
    ) -> Budget:
        prefix = unique_prefix()
        budget = RedisBudget(
            self.client,
            operation=QUERY_JOB,
            limit=limit,
            window=self.window,
            max_in_flight=limit if max_in_flight is None else max_in_flight,
            lease=2.0,
            recovery_rate=recovery_rate,
            ceiling_recovery_time=ceiling_recovery_time,
            prefix=prefix,
        )
        self.budgets.append(budget)
        self.prefixes.append(prefix)
        return budget

    def now(self) -> float:
        return time.monotonic()

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def settle(self) -> None:
        # Until no budget waits for Redis (twice in a row: an answer may start another
        # round trip), at least 10 ms, at most half a second (a loaded machine is slow).
        quiet = 0
        for _ in range(100):
            await asyncio.sleep(0.005)
            busy = any(budget.redis_ledger.round_trips for budget in self.budgets)
            quiet = 0 if busy else quiet + 1
            if quiet >= 2:
                return

    async def drain(self) -> None:
        pass

    async def aclose(self) -> None:
        for budget in self.budgets:
            await budget.aclose()
        for prefix in self.prefixes:
            await delete_prefix(self.client, prefix)


#: For tests of exact instants: the local harness only. The waiting is one implementation
#: (`SlotBudget`) for every ledger, so its timing is proved on a manual clock; on real time (the
#: Redis harness) instants drift with the machine's load, and what the Redis ledger adds is
#: tested with robust assertions in test_redis_ledger.py.
EXACT_TIMES = pytest.mark.parametrize("harness", ["local"], indirect=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["local", *SHARED_BACKENDS])
async def harness(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Harness]:
    if request.param == "local":
        yield ManualHarness(clock)
        return
    client = await connect_backend(request, request.param)
    redis_harness = RedisHarness(client)
    try:
        yield redis_harness
    finally:
        await redis_harness.aclose()
        await client.aclose()


def max_arrivals_in_any_window(spans: list[tuple[float, float]], window: float) -> int:
    """The most calls the upstream could see arrive within one window, whatever the network did.

    A call arrives at some unknown moment between its start and its end, so a window [t, t+w)
    can hold every call with start < t + w and end >= t. The count is highest when t is one of
    the ends (moving t up to the next end only lets calls in), so trying each end is exact.
    """
    return max(
        (sum(1 for s, e in spans if e >= t and s < t + window) for _, t in spans),
        default=0,
    )


class Recorder:
    """Runs calls through a budget and records when each was granted and completed."""

    def __init__(self, budget: Budget, harness: Harness) -> None:
        self.budget = budget
        self.harness = harness
        self.granted: list[str] = []
        self.grant_times: dict[str, float] = {}
        self.spans: list[tuple[float, float]] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        *,
        key: Hashable | None = None,
        duration: float = 0.0,
        deadline: float = FOREVER,
        gate: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        async def call() -> None:
            async with self.budget.slot(deadline, key=key):
                start = self.harness.now()
                self.granted.append(name)
                self.grant_times[name] = start
                try:
                    if gate is not None:
                        await gate.wait()
                    if duration:
                        await self.harness.sleep(duration)
                finally:
                    self.spans.append((start, self.harness.now()))

        task = asyncio.create_task(call(), name=name)
        self.tasks[name] = task
        return task

    def offsets(self, t0: float, names: list[str]) -> list[float]:
        """Grant times of `names`, in windows after `t0`."""
        return [(self.grant_times[name] - t0) / self.harness.window for name in names]

    async def finish(self) -> None:
        """Run every call to its end (they must all end)."""
        await self.harness.drain()
        await asyncio.wait_for(
            asyncio.gather(*self.tasks.values(), return_exceptions=True), timeout=10.0
        )


def about(value: float, harness: Harness) -> object:
    """`value` (in windows) within the harness's tolerance."""
    return pytest.approx(value, abs=harness.tolerance / harness.window)


async def refused(budget: Budget, deadline: float, *, key: Hashable | None = None) -> float:
    """Ask for a slot that must be refused at once; the refusal's retry_after."""
    with pytest.raises(errors.BudgetExhausted) as caught:
        async with budget.slot(deadline, key=key):
            raise AssertionError("must not be granted")
    return caught.value.retry_after


# --- behaviour (every implementation) ----------------------------------------------------------


@EXACT_TIMES
async def test_burst_of_limit_then_pacing(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(3)
    rec = Recorder(budget, harness)
    t0 = harness.now()
    for i in range(7):
        rec.start(f"c{i}")
    await harness.settle()
    assert rec.granted == ["c0", "c1", "c2"]
    assert budget.status().waiting == 4

    await harness.advance(0.75 * w)
    assert len(rec.granted) == 3
    await harness.advance(0.5 * w)
    assert rec.granted == ["c0", "c1", "c2", "c3", "c4", "c5"]
    await harness.advance(1.0 * w)
    assert rec.granted == [f"c{i}" for i in range(7)]
    assert rec.offsets(t0, rec.granted) == [about(x, harness) for x in (0, 0, 0, 1, 1, 1, 2)]
    await rec.finish()


@EXACT_TIMES
async def test_slow_call_holds_its_slot_until_window_after_completion(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(1)
    rec = Recorder(budget, harness)
    t0 = harness.now()
    rec.start("slow", duration=2.0 * w)
    await harness.settle()
    rec.start("next")
    await harness.advance(2.75 * w)
    # A send-time log would have let "next" go at t0 + w; it waits for completion + window.
    assert rec.granted == ["slow"]
    status = budget.status()
    assert (status.in_flight, status.held, status.waiting) == (0, 1, 1)
    await harness.advance(0.5 * w)
    assert rec.granted == ["slow", "next"]
    assert rec.offsets(t0, ["next"]) == [about(3.0, harness)]
    await rec.finish()


async def test_waiters_of_one_key_are_served_in_arrival_order(harness: Harness) -> None:
    budget = harness.make(2)
    rec = Recorder(budget, harness)
    for i in range(9):
        rec.start(f"w{i}", duration=random.Random(i).uniform(0, 0.5) * harness.window)
        await harness.settle()
    await rec.finish()
    assert rec.granted == [f"w{i}" for i in range(9)]


async def test_keys_are_served_round_robin(harness: Harness) -> None:
    budget = harness.make(1)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    rec.start("holder", key="x", gate=gate)
    await harness.settle()
    for name in ["a1", "a2", "a3"]:
        rec.start(name, key="a")
    for name in ["b1", "b2"]:
        rec.start(name, key="b")
    await harness.settle()
    rec.start("c1", key="c")
    await harness.settle()
    assert budget.status().waiting == 6
    gate.set()
    await rec.finish()
    assert rec.granted == ["holder", "a1", "b1", "c1", "a2", "b2", "a3"]


@EXACT_TIMES
async def test_one_id_is_not_stuck_behind_another_keys_backlog(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(10)
    rec = Recorder(budget, harness)
    for i in range(1000):
        rec.start(f"big{i}", key="big")
    await harness.settle()
    assert len(rec.granted) == 10
    t0 = rec.grant_times["big0"]  # the ten slots free one window after this
    # Behind 990 waiters (99 windows in arrival order), with a deadline of 1.5 windows: not
    # refused, since the round-robin serves it in the next turn.
    small = rec.start("small", key="small", deadline=harness.now() + 1.5 * w)
    await harness.settle()
    await harness.advance(t0 + 1.25 * w - harness.now())
    assert small.done()
    assert small.exception() is None
    assert rec.offsets(t0, ["small"]) == [about(1.0, harness)]
    assert rec.granted.index("small") <= 11
    assert len(rec.granted) == 20
    for task in rec.tasks.values():
        task.cancel()
    await rec.finish()
    assert budget.status().waiting == 0


@EXACT_TIMES
async def test_newcomer_never_takes_a_freed_slot_ahead_of_a_waiter(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(1)
    rec = Recorder(budget, harness)
    t0 = harness.now()
    rec.start("first")
    await harness.settle()
    rec.start("waiter")
    await harness.advance(0.9 * w)
    rec.start("newcomer")
    await harness.advance(0.35 * w)
    assert rec.granted == ["first", "waiter"]
    await rec.finish()
    assert rec.granted == ["first", "waiter", "newcomer"]
    assert rec.offsets(t0, rec.granted) == [about(x, harness) for x in (0, 1, 2)]


@EXACT_TIMES
async def test_fails_fast_when_the_deadline_cannot_be_met(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(2)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    rec.start("a", gate=gate)
    rec.start("b", gate=gate)
    await harness.settle()
    now = harness.now()

    # Both slots in flight: the earliest grant is if one completed now, so now + w.
    assert await refused(budget, now + 0.5 * w) / w == about(1.0, harness)
    assert budget.status().waiting == 0

    # Two waiters of one key ahead, with two slots in flight: another waiter of that key would
    # need a slot that one of those waiters used first, so at least now + 2 w.
    rec.start("w1", key="k")
    rec.start("w2", key="k")
    await harness.settle()
    assert await refused(budget, now + 1.9 * w, key="k") / w == about(2.0, harness)
    # A waiter of another key is next after one turn: the first slot to free, now + w.
    assert await refused(budget, now + 0.9 * w, key="other") / w == about(1.0, harness)
    assert budget.status().next_free_in / w == about(1.0, harness)
    gate.set()
    await rec.finish()


@EXACT_TIMES
async def test_fail_fast_counts_turns_of_every_waiting_key(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(2)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    rec.start("a", gate=gate)
    rec.start("b", gate=gate)
    await harness.settle()
    for i in range(3):
        rec.start(f"x{i}", key="x")
        rec.start(f"y{i}", key="y")
    await harness.settle()
    now = harness.now()
    # A fourth "x" waits for x0..x2 and at least y0..y2: 6 grants at 2 per window, after the
    # slots in flight free (now + w): at least now + 4 w.
    assert await refused(budget, now + 3.9 * w, key="x") / w == about(4.0, harness)
    # A new key waits for one turn of "x" and one of "y": the third grant, at now + 2 w.
    assert await refused(budget, now + 1.9 * w, key="z") / w == about(2.0, harness)
    gate.set()
    await rec.finish()


@EXACT_TIMES
async def test_fail_fast_estimate_counts_recent_slots(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(2)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    t0 = harness.now()
    rec.start("done")
    rec.start("busy", gate=gate)
    await harness.settle()
    await harness.advance(0.4 * w)
    # "done" completed at t0 (its slot frees at t0 + w): 0.6 w from now.
    retry_after = await refused(budget, harness.now() + 0.3 * w)
    assert (harness.now() + retry_after - t0) / w == about(1.0, harness)
    gate.set()
    await rec.finish()


@EXACT_TIMES
async def test_deadline_passing_while_waiting_raises(harness: Harness) -> None:
    w = harness.window
    budget = harness.make(1)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    rec.start("holder", gate=gate)
    await harness.settle()
    outcome: list[BaseException] = []

    async def wait_for_slot() -> None:
        try:
            async with budget.slot(harness.now() + 2.0 * w):
                raise AssertionError("must not be granted")
        except errors.BudgetExhausted as exc:
            outcome.append(exc)

    task = asyncio.create_task(wait_for_slot())
    await harness.advance(1.75 * w)
    assert not outcome
    assert budget.status().waiting == 1
    await harness.advance(0.5 * w)
    assert task.done()
    assert isinstance(outcome[0], errors.BudgetExhausted)
    assert outcome[0].retry_after / w == about(1.0, harness)  # the holder, if it ended now
    assert budget.status().waiting == 0
    gate.set()
    await rec.finish()


@EXACT_TIMES
async def test_cancelled_waiter_consumes_nothing(harness: Harness) -> None:
    budget = harness.make(1)
    rec = Recorder(budget, harness)
    t0 = harness.now()
    rec.start("first")
    await harness.settle()
    cancelled = rec.start("cancelled")
    await harness.settle()
    rec.start("after")
    await harness.settle()
    cancelled.cancel()
    await harness.settle()
    assert budget.status().waiting == 1
    await rec.finish()
    # "after" got the slot "cancelled" would have had, at the first moment it freed.
    assert rec.granted == ["first", "after"]
    assert rec.offsets(t0, ["after"]) == [about(1.0, harness)]
    status = budget.status()
    assert (status.in_flight, status.waiting) == (0, 0)


@EXACT_TIMES
@pytest.mark.parametrize("ending", ["return", "error", "cancel"])
async def test_every_ending_of_the_body_counts_as_a_completed_call(
    harness: Harness, ending: str
) -> None:
    w = harness.window
    budget = harness.make(1)
    t0 = harness.now()

    async def call() -> None:
        async with budget.slot(FOREVER):
            await harness.sleep(0.5 * w)
            if ending == "error":
                raise errors.UpstreamUnavailable("The upstream answered 503.")

    task = asyncio.create_task(call())
    await harness.advance(0.25 * w)
    if ending == "cancel":
        task.cancel()
    await harness.advance(0.5 * w)
    assert task.done()
    status = budget.status()
    assert (status.in_flight, status.held) == (0, 1)
    # The slot is held until window after the completion.
    done_at = t0 + (0.25 if ending == "cancel" else 0.5) * w
    assert (status.next_free_in + harness.now() - done_at) / w == about(1.0, harness)
    if not task.cancelled():
        if ending == "error":
            assert isinstance(task.exception(), errors.UpstreamUnavailable)
        else:
            assert task.exception() is None


async def test_past_deadline_is_refused_even_with_free_slots(harness: Harness) -> None:
    budget = harness.make(5)
    await refused(budget, harness.now() - 0.001)
    assert budget.status().in_flight == 0


async def test_max_in_flight_holds_back_grants_until_a_call_ends(harness: Harness) -> None:
    budget = harness.make(10, max_in_flight=2)
    rec = Recorder(budget, harness)
    gates = [asyncio.Event() for _ in range(5)]
    for i, gate in enumerate(gates):
        rec.start(f"c{i}", gate=gate)
    await harness.settle()
    assert rec.granted == ["c0", "c1"]
    status = budget.status()
    assert (status.in_flight, status.waiting) == (2, 3)
    # A completion lets the next one go at once: no window to wait, the budget has room.
    gates[0].set()
    await harness.settle()
    assert rec.granted == ["c0", "c1", "c2"]
    for gate in gates:
        gate.set()
    await rec.finish()
    assert rec.granted == [f"c{i}" for i in range(5)]


@EXACT_TIMES
async def test_throttles_halve_the_limit_once_per_burst_and_it_recovers(
    harness: Harness,
) -> None:
    w = harness.window
    # 10 calls per window, regaining 10% of that per window: 1 call per window.
    budget = harness.make(10, recovery_rate=0.1 / w)
    rec = Recorder(budget, harness)
    for i in range(10):
        rec.start(f"c{i}")
    await harness.settle()
    # Every call of the burst comes back throttled: one decrease.
    t0 = harness.now()
    for _ in range(10):
        await budget.throttled()
    status = budget.status()
    # Halved, and the ceiling a little under the rate that was throttled.
    assert (status.limit, status.effective_limit, status.ceiling) == (10, 5, 9)
    for i in range(10):
        rec.start(f"d{i}", key="d")
    await harness.advance(t0 + 1.25 * w - harness.now())
    # The ten slots freed by t0 + w, but only 5 (then 6, from t0 + w) may be held.
    assert len(rec.granted) == 10 + 6
    assert budget.status().effective_limit == 6
    await harness.advance(1.0 * w)
    assert budget.status().effective_limit == 7
    await rec.finish()
    assert rec.offsets(t0, ["d0", "d5", "d6", "d9"]) == [about(x, harness) for x in (1, 1, 2, 2)]
    assert max_arrivals_in_any_window(rec.spans, w) <= 10


@EXACT_TIMES
async def test_throttles_never_go_below_one_call_and_recover_to_the_limit(
    harness: Harness,
) -> None:
    w = harness.window
    # 2 calls per window, regaining 0.5 call per window each window; the ceiling regains
    # 1 call (half the limit) in 2 windows.
    budget = harness.make(2, recovery_rate=0.25 / w, ceiling_recovery_time=2.0 * w)
    await budget.throttled()  # at 2 calls: 1 call, ceiling 1.8
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (1, 1)
    await harness.advance(1.1 * w)  # past the holdoff: a new burst (at 1.55 calls)
    await budget.throttled()  # 1 call (not 0.775), ceiling 1.395
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (1, 1)
    await harness.advance(1.0 * w)  # 1.5 calls, ceiling 1.52
    assert budget.status().effective_limit == 1
    await harness.advance(1.25 * w)  # 2.125 calls, ceiling 2.82: both capped at the limit
    status = budget.status()
    assert (status.limit, status.effective_limit, status.ceiling) == (2, 2, 2)


@EXACT_TIMES
async def test_the_climb_stops_at_the_ceiling_which_creeps_back_to_the_limit(
    harness: Harness,
) -> None:
    w = harness.window
    # 10 calls per window, regaining 1 call per window each window; the ceiling regains
    # 5 * (t / 10 w) ** 3 calls t after the throttle.
    budget = harness.make(10, recovery_rate=0.1 / w, ceiling_recovery_time=10.0 * w)
    t0 = harness.now()
    await budget.throttled()  # at 10 calls: 5, ceiling 9
    await harness.advance(t0 + 3.5 * w - harness.now())  # the climb: 8.5 calls
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (8, 9)
    await harness.advance(t0 + 5.0 * w - harness.now())  # the climb is at 10; the ceiling 9.6
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (9, 9)
    rec = Recorder(budget, harness)
    gate = asyncio.Event()
    for i in range(10):
        rec.start(f"c{i}", gate=gate)
    await harness.settle()
    assert len(rec.granted) == 9
    # The tenth goes when the ceiling reaches 10: 9 + 5 x ** 3 = 10 at x = 0.2 ** (1/3).
    await harness.advance(t0 + 6.5 * w - harness.now())
    assert rec.offsets(t0, ["c9"]) == [about(10 * 0.2 ** (1 / 3), harness)]
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (10, 10)
    gate.set()
    await rec.finish()


class SharedUpstream:
    """An upstream another client shares: it throttles a call when more than `allowed` calls
    (itself included, throttled ones too) arrived within the `window` that ends with it."""

    def __init__(self, harness: Harness, allowed: int, window: float) -> None:
        self.harness = harness
        self.allowed = allowed
        self.window = window
        self.arrivals: list[float] = []
        self.throttled: list[float] = []

    def call(self) -> bool:
        """One call arriving now; True if it is throttled."""
        now = self.harness.now()
        self.arrivals.append(now)  # the harness's clock never goes back: sorted
        first = bisect.bisect_right(self.arrivals, now - self.window)
        if len(self.arrivals) - first > self.allowed:
            self.throttled.append(now)
            return True
        return False


@EXACT_TIMES
async def test_under_a_co_tenant_throttles_stop_and_the_rate_settles_under_its_share(
    harness: Harness,
) -> None:
    w = harness.window
    # A budget of 10 calls per window; a co-tenant leaves 4. The budget's throttles halve
    # the rate (10, 6, 5: about 3 throttled bursts) and set the ceiling under the rates that
    # were throttled, until it settles under 4.5: then 4 calls per window, no throttle, for
    # the rest of a long stretch (the ceiling takes minutes to creep back to 5).
    limit, allowed = 10, 4
    budget = harness.make(limit, recovery_rate=0.1 / w)
    # A little shorter than the budget's window: room for the clocks' rounding, as in
    # production (the budget's window is 1 s plus a margin).
    upstream = SharedUpstream(harness, allowed, 0.95 * w)

    async def client() -> None:
        while True:
            async with budget.slot(FOREVER):
                throttled = upstream.call()
            if throttled:
                await budget.throttled()  # as the fetcher does, before retrying

    t0 = harness.now()
    clients = [asyncio.create_task(client()) for _ in range(2 * limit)]
    await harness.advance(harness.long_stretch * w)
    end = harness.now()
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)

    assert upstream.throttled, "the upstream never throttled: the test proves nothing"
    settled_at = t0 + 8 * w
    assert max(upstream.throttled) < settled_at, [(t - t0) / w for t in upstream.throttled]
    bursts = sum(
        1
        for before, after in zip([-math.inf, *upstream.throttled], upstream.throttled, strict=False)
        if after - before > w / 2
    )
    assert bursts <= 4, [(t - t0) / w for t in upstream.throttled]
    # Settled: under the co-tenant's share in every window, and close to it (not starved).
    settled = [t for t in upstream.arrivals if t >= settled_at]
    assert max_arrivals_in_any_window([(t, t) for t in settled], upstream.window) <= allowed
    assert len(settled) >= 0.6 * allowed * (end - settled_at) / w
    status = budget.status()
    assert (status.effective_limit, status.ceiling) == (allowed, allowed)


# --- races at one instant (a manual clock can stage them) --------------------------------------


def local_budget(clock: ManualClock, limit: int) -> LocalBudget:
    return LocalBudget(limit, 1.0, clock=clock, call_later=clock.call_later)


async def test_waiter_cancelled_after_its_grant_gives_the_slot_back(clock: ManualClock) -> None:
    budget = local_budget(clock, 1)
    rec = Recorder(budget, ManualHarness(clock))
    t0 = clock()
    rec.start("first")
    await settle()
    unlucky = rec.start("unlucky")
    await settle()
    rec.start("next")
    await settle()
    # The slot frees and is granted to "unlucky", which is cancelled before it runs again.
    clock.now = t0 + 1.0
    assert clock.fire_due() >= 1
    unlucky.cancel()
    await settle()
    assert rec.granted == ["first", "next"]
    assert rec.grant_times["next"] == t0 + 1.0
    await clock.run_until_idle()


async def test_cancelled_at_the_instant_of_its_deadline(clock: ManualClock) -> None:
    budget = local_budget(clock, 1)
    rec = Recorder(budget, ManualHarness(clock))
    gate = asyncio.Event()
    rec.start("holder", gate=gate)
    await settle()
    waiter = rec.start("waiter", deadline=clock() + 2.0)
    await settle()
    clock.now += 2.0
    waiter.cancel()  # cancels the future it awaits at once; its handler has not run yet
    assert clock.fire_due() == 1  # the deadline timer, before the task sees its cancellation
    await settle()
    assert waiter.cancelled()
    assert budget.status().waiting == 0
    gate.set()
    await clock.run_until_idle()


async def test_cancelled_at_the_instant_its_slot_frees(clock: ManualClock) -> None:
    budget = local_budget(clock, 1)
    rec = Recorder(budget, ManualHarness(clock))
    t0 = clock()
    rec.start("first")
    await settle()
    unlucky = rec.start("unlucky")
    await settle()
    rec.start("next")
    await settle()
    clock.now = t0 + 1.0
    unlucky.cancel()
    assert clock.fire_due() >= 1  # the slot frees; "unlucky" is cancelled but not yet unwound
    await settle()
    assert unlucky.cancelled()
    assert rec.granted == ["first", "next"]
    assert rec.grant_times["next"] == t0 + 1.0


async def test_a_limit_step_wakes_waiters_even_when_no_slot_expires(clock: ManualClock) -> None:
    # Limit 1 regains 0.05 call per second: the step from 1 to... is 20 s away, so take 10.
    budget = LocalBudget(10, 1.0, recovery_rate=0.1, clock=clock, call_later=clock.call_later)
    rec = Recorder(budget, ManualHarness(clock))
    t0 = clock()
    await budget.throttled()  # 5 calls, one more each second
    for i in range(7):
        rec.start(f"c{i}", duration=100.0)  # all in flight for long: no expiry to time
    await settle()
    assert len(rec.granted) == 5
    await clock.advance(1.0)
    assert len(rec.granted) == 6
    await clock.advance(1.0)
    assert len(rec.granted) == 7
    assert rec.offsets(t0, ["c5", "c6"]) == [1.0, 2.0]
    await clock.run_until_idle()


def test_from_settings_uses_qps_margin_and_concurrency() -> None:
    budget = LocalBudget.from_settings(
        GatewaySettings(upstream_qps=42, upstream_window_margin=0.01, upstream_concurrency=7)
    )
    assert budget.limit == 42
    assert budget.window == pytest.approx(1.01)
    assert budget.max_in_flight == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit of at least 1"),
        ({"limit": 1, "window": 0.0}, "window of more than 0"),
        ({"limit": 1, "max_in_flight": 0}, "max_in_flight of at least 1"),
        ({"limit": 1, "decrease_factor": 0.0}, "decrease factor"),
    ],
)
def test_rejects_nonsense(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalBudget(**options)  # type: ignore[arg-type]


# --- the limit holds whatever the traffic ---------------------------------------------------


@dataclass(frozen=True)
class PlannedCall:
    arrival: float
    duration: float
    patience: float  # deadline = arrival + patience
    cancel_after: float | None
    key: str
    throttled: bool  # reports a throttle when its call ends


planned_calls = st.builds(
    PlannedCall,
    arrival=st.floats(0, 3, allow_nan=False).map(lambda x: round(x, 2)),
    duration=st.floats(0, 1.5, allow_nan=False).map(lambda x: round(x, 2)),
    patience=st.one_of(st.just(FOREVER), st.floats(0, 3).map(lambda x: round(x, 2))),
    cancel_after=st.one_of(st.none(), st.floats(0, 3).map(lambda x: round(x, 2))),
    key=st.sampled_from("abc"),
    throttled=st.sampled_from([False, False, True]),
)


async def _simulate(
    limit: int, window: float, max_in_flight: int, plan: list[PlannedCall]
) -> tuple[LocalBudget, list[tuple[float, float]], list[int], dict[int, float], set[int]]:
    clock = ManualClock(start=0.0)
    budget = LocalBudget(
        limit,
        window,
        max_in_flight=max_in_flight,
        recovery_rate=0.5,
        clock=clock,
        call_later=clock.call_later,
    )
    spans: list[tuple[float, float]] = []
    entered: list[int] = []
    granted: dict[int, float] = {}
    refused: set[int] = set()

    async def call(index: int, planned: PlannedCall) -> None:
        await clock.sleep(planned.arrival)
        entered.append(index)
        try:
            async with budget.slot(planned.arrival + planned.patience, key=planned.key):
                start = clock()
                granted[index] = start
                try:
                    await clock.sleep(planned.duration)
                finally:
                    spans.append((start, clock()))
            if planned.throttled:
                await budget.throttled()
        except errors.BudgetExhausted:
            refused.add(index)

    def canceller(task: asyncio.Task[None]) -> Callable[[], None]:
        def cancel() -> None:
            task.cancel()

        return cancel

    tasks = [asyncio.create_task(call(i, p)) for i, p in enumerate(plan)]
    for task, planned in zip(tasks, plan, strict=True):
        if planned.cancel_after is not None:
            clock.call_later(planned.arrival + planned.cancel_after, canceller(task))
    await clock.run_until_idle()
    await asyncio.gather(*tasks, return_exceptions=True)
    return budget, spans, entered, granted, refused


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 4),
    window=st.sampled_from([0.5, 1.0]),
    max_in_flight=st.integers(1, 4),
    plan=st.lists(planned_calls, max_size=25),
)
def test_never_more_than_limit_calls_in_any_window(
    limit: int, window: float, max_in_flight: int, plan: list[PlannedCall]
) -> None:
    budget, spans, entered, granted, refused = asyncio.run(
        _simulate(limit, window, max_in_flight, plan)
    )

    # Receiver side: however the network delayed them, no window saw more than `limit` calls
    # (throttles only lower the limit), nor more than max_in_flight at once.
    assert max_arrivals_in_any_window(spans, window) <= limit
    assert max_arrivals_in_any_window(spans, 0.0) <= max_in_flight
    # FIFO within a key: a call that asked earlier was granted no later. (Grant times, not the
    # order in which tasks resumed: two calls granted at one instant may resume in either order.)
    for key in "abc":
        times = [granted[i] for i in entered if i in granted and plan[i].key == key]
        assert times == sorted(times)
    # Nothing leaks: no waiter or call left over.
    status = budget.status()
    assert (status.in_flight, status.waiting) == (0, 0)
    # Patient calls that nobody cancelled were all served.
    for index, planned in enumerate(plan):
        if planned.patience == FOREVER and planned.cancel_after is None:
            assert index in granted
            assert index not in refused


# --- real time --------------------------------------------------------------------------------


async def test_real_clock_keeps_every_receiver_window_under_the_limit() -> None:
    limit = 20
    budget = LocalBudget(limit, 1.0 + 0.005)
    rng = random.Random(7)
    spans: list[tuple[float, float]] = []

    async def call(latency: float) -> None:
        async with budget.slot(FOREVER):
            start = time.monotonic()
            await asyncio.sleep(latency)
            spans.append((start, time.monotonic()))

    began = time.monotonic()
    await asyncio.gather(*(call(rng.uniform(0.0, 0.05)) for _ in range(3 * limit)))
    elapsed = time.monotonic() - began

    assert len(spans) == 3 * limit
    assert max_arrivals_in_any_window(spans, 1.0) <= limit
    # A burst, then two paced rounds of at least a window each (a busy machine only adds).
    assert elapsed >= 2.0
