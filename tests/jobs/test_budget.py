"""Behaviour of the upstream call budget.

The behaviour tests take a `make_budget(limit, window)` fixture, parametrized by implementation,
so that a shared (Redis) budget can run the same tests later. Time is a `ManualClock`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.jobs.budget import Budget, LocalBudget
from gateway.settings import GatewaySettings

from .jobfakes import FOREVER, ManualClock, settle

MakeBudget = Callable[[int, float], Budget]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["local"])
def make_budget(request: pytest.FixtureRequest, clock: ManualClock) -> MakeBudget:
    def make(limit: int, window: float) -> Budget:
        if request.param == "local":
            return LocalBudget(limit, window, clock=clock, call_later=clock.call_later)
        raise AssertionError(request.param)

    return make


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

    def __init__(self, budget: Budget, clock: ManualClock) -> None:
        self.budget = budget
        self.clock = clock
        self.granted: list[str] = []
        self.grant_times: dict[str, float] = {}
        self.spans: list[tuple[float, float]] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        *,
        duration: float = 0.0,
        deadline: float = FOREVER,
        gate: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        async def call() -> None:
            async with self.budget.slot(deadline):
                start = self.clock()
                self.granted.append(name)
                self.grant_times[name] = start
                try:
                    if gate is not None:
                        await gate.wait()
                    if duration:
                        await self.clock.sleep(duration)
                finally:
                    self.spans.append((start, self.clock()))

        task = asyncio.create_task(call(), name=name)
        self.tasks[name] = task
        return task


async def test_burst_of_limit_then_pacing(make_budget: MakeBudget, clock: ManualClock) -> None:
    budget = make_budget(3, 1.0)
    rec = Recorder(budget, clock)
    t0 = clock()
    for i in range(7):
        rec.start(f"c{i}")
    await settle()
    assert rec.granted == ["c0", "c1", "c2"]
    assert budget.snapshot().waiting == 4

    await clock.advance(0.999)
    assert len(rec.granted) == 3
    await clock.advance(0.001)
    assert rec.granted == ["c0", "c1", "c2", "c3", "c4", "c5"]
    await clock.advance(1.0)
    assert rec.granted == [f"c{i}" for i in range(7)]
    assert [rec.grant_times[f"c{i}"] - t0 for i in range(7)] == [0, 0, 0, 1, 1, 1, 2]


async def test_slow_call_holds_its_slot_until_window_after_completion(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
    t0 = clock()
    rec.start("slow", duration=2.0)
    await settle()
    rec.start("next")
    await clock.advance(2.999)
    # A send-time log would have let "next" go at t0 + 1; it waits for completion + window.
    assert rec.granted == ["slow"]
    status = budget.snapshot()
    assert (status.in_flight, status.recent, status.waiting) == (0, 1, 1)
    await clock.advance(0.001)
    assert rec.granted == ["slow", "next"]
    assert rec.grant_times["next"] == t0 + 3.0


async def test_waiters_are_served_in_arrival_order(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(2, 1.0)
    rec = Recorder(budget, clock)
    for i in range(9):
        rec.start(f"w{i}", duration=random.Random(i).uniform(0, 0.5))
        await settle()
    await clock.run_until_idle()
    assert rec.granted == [f"w{i}" for i in range(9)]


async def test_newcomer_never_takes_a_freed_slot_ahead_of_a_waiter(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
    t0 = clock()
    rec.start("first")
    await settle()
    rec.start("waiter")
    await settle()
    # The slot frees at t0 + 1; a newcomer arrives exactly then, before the budget's timer fired.
    clock.now = t0 + 1.0
    rec.start("newcomer")
    await settle()
    assert rec.granted == ["first", "waiter"]
    await clock.run_until_idle()
    assert rec.granted == ["first", "waiter", "newcomer"]


async def test_fails_fast_when_the_deadline_cannot_be_met(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(2, 1.0)
    rec = Recorder(budget, clock)
    gate = asyncio.Event()
    rec.start("a", gate=gate)
    rec.start("b", gate=gate)
    await settle()
    now = clock()

    # Both slots in flight: the earliest grant is if one completed now, so now + 1.
    with pytest.raises(errors.BudgetExhausted) as caught:
        async with budget.slot(now + 0.5):
            raise AssertionError("must not be granted")
    assert caught.value.retry_after == pytest.approx(1.0)
    assert budget.snapshot().waiting == 0

    # Two waiters ahead with two slots in flight: the third newcomer would need a slot that
    # one of those waiters used first, so at least now + 2.
    rec.start("w1")
    rec.start("w2")
    await settle()
    with pytest.raises(errors.BudgetExhausted) as caught:
        async with budget.slot(now + 1.9):
            raise AssertionError("must not be granted")
    assert caught.value.retry_after == pytest.approx(2.0)
    assert budget.snapshot().next_free_in == pytest.approx(2.0)
    gate.set()
    await clock.run_until_idle()


async def test_fail_fast_estimate_counts_recent_slots(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(2, 1.0)
    rec = Recorder(budget, clock)
    gate = asyncio.Event()
    rec.start("done")
    rec.start("busy", gate=gate)
    await settle()
    await clock.advance(0.4)
    # "done" completed at t0 (its slot frees at t0 + 1): 0.6 s from now.
    with pytest.raises(errors.BudgetExhausted) as caught:
        async with budget.slot(clock() + 0.5):
            raise AssertionError("must not be granted")
    assert caught.value.retry_after == pytest.approx(0.6)
    gate.set()
    await clock.run_until_idle()


async def test_deadline_passing_while_waiting_raises(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
    gate = asyncio.Event()
    rec.start("holder", gate=gate)
    await settle()
    outcome: list[BaseException] = []

    async def wait_for_slot() -> None:
        try:
            async with budget.slot(clock() + 2.0):
                raise AssertionError("must not be granted")
        except errors.BudgetExhausted as exc:
            outcome.append(exc)

    task = asyncio.create_task(wait_for_slot())
    await clock.advance(1.999)
    assert not outcome
    assert budget.snapshot().waiting == 1
    await clock.advance(0.001)
    assert task.done()
    assert isinstance(outcome[0], errors.BudgetExhausted)
    assert outcome[0].retry_after == pytest.approx(1.0)  # the holder, if it completed now
    assert budget.snapshot().waiting == 0
    gate.set()
    await clock.run_until_idle()


async def test_cancelled_waiter_consumes_nothing(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
    t0 = clock()
    rec.start("first")
    await settle()
    cancelled = rec.start("cancelled")
    await settle()
    rec.start("after")
    await settle()
    cancelled.cancel()
    await settle()
    assert budget.snapshot().waiting == 1
    await clock.run_until_idle()
    # "after" got the slot "cancelled" would have had, at the first moment it freed.
    assert rec.granted == ["first", "after"]
    assert rec.grant_times["after"] == t0 + 1.0
    status = budget.snapshot()
    assert (status.in_flight, status.recent, status.waiting) == (0, 1, 0)


async def test_waiter_cancelled_after_its_grant_gives_the_slot_back(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
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


async def test_cancelled_at_the_instant_of_its_deadline(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
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
    assert budget.snapshot().waiting == 0
    gate.set()
    await clock.run_until_idle()


async def test_cancelled_at_the_instant_its_slot_frees(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(1, 1.0)
    rec = Recorder(budget, clock)
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


@pytest.mark.parametrize("ending", ["return", "error", "cancel"])
async def test_every_ending_of_the_body_counts_as_a_completed_call(
    make_budget: MakeBudget, clock: ManualClock, ending: str
) -> None:
    budget = make_budget(1, 1.0)
    t0 = clock()

    async def call() -> None:
        async with budget.slot(FOREVER):
            await clock.sleep(0.5)
            if ending == "error":
                raise errors.UpstreamUnavailable("The upstream answered 503.")

    task = asyncio.create_task(call())
    await clock.advance(0.25)
    if ending == "cancel":
        task.cancel()
    await clock.advance(0.25)
    assert task.done()
    status = budget.snapshot()
    assert (status.in_flight, status.recent) == (0, 1)
    # The slot is held until window after the completion.
    done_at = t0 + (0.25 if ending == "cancel" else 0.5)
    assert status.next_free_in == pytest.approx(done_at + 1.0 - clock())
    if not task.cancelled():
        if ending == "error":
            assert isinstance(task.exception(), errors.UpstreamUnavailable)
        else:
            assert task.exception() is None


async def test_past_deadline_is_refused_even_with_free_slots(
    make_budget: MakeBudget, clock: ManualClock
) -> None:
    budget = make_budget(5, 1.0)
    with pytest.raises(errors.BudgetExhausted):
        async with budget.slot(clock() - 0.001):
            raise AssertionError("must not be granted")
    assert budget.snapshot().in_flight == 0


def test_from_settings_uses_qps_and_margin() -> None:
    budget = LocalBudget.from_settings(
        GatewaySettings(upstream_qps=42, upstream_window_margin=0.01)
    )
    assert budget.limit == 42
    assert budget.window == pytest.approx(1.01)


def test_rejects_a_nonsense_limit() -> None:
    with pytest.raises(ValueError, match="limit of at least 1"):
        LocalBudget(0)


# --- the limit holds whatever the traffic ---------------------------------------------------


@dataclass(frozen=True)
class PlannedCall:
    arrival: float
    duration: float
    patience: float  # deadline = arrival + patience
    cancel_after: float | None


planned_calls = st.builds(
    PlannedCall,
    arrival=st.floats(0, 3, allow_nan=False).map(lambda x: round(x, 2)),
    duration=st.floats(0, 1.5, allow_nan=False).map(lambda x: round(x, 2)),
    patience=st.one_of(st.just(FOREVER), st.floats(0, 3).map(lambda x: round(x, 2))),
    cancel_after=st.one_of(st.none(), st.floats(0, 3).map(lambda x: round(x, 2))),
)


async def _simulate(
    limit: int, window: float, plan: list[PlannedCall]
) -> tuple[LocalBudget, list[tuple[float, float]], list[int], dict[int, float], set[int]]:
    clock = ManualClock(start=0.0)
    budget = LocalBudget(limit, window, clock=clock, call_later=clock.call_later)
    spans: list[tuple[float, float]] = []
    entered: list[int] = []
    granted: dict[int, float] = {}
    refused: set[int] = set()

    async def call(index: int, planned: PlannedCall) -> None:
        await clock.sleep(planned.arrival)
        entered.append(index)
        try:
            async with budget.slot(planned.arrival + planned.patience):
                start = clock()
                granted[index] = start
                try:
                    await clock.sleep(planned.duration)
                finally:
                    spans.append((start, clock()))
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
    plan=st.lists(planned_calls, max_size=25),
)
def test_never_more_than_limit_calls_in_any_window(
    limit: int, window: float, plan: list[PlannedCall]
) -> None:
    budget, spans, entered, granted, refused = asyncio.run(_simulate(limit, window, plan))

    # Receiver side: however the network delayed them, no window saw more than `limit` calls.
    assert max_arrivals_in_any_window(spans, window) <= limit
    # FIFO: a call that asked earlier was granted no later. (Grant times, not the order in
    # which tasks resumed: two calls granted at one instant may resume in either order.)
    times = [granted[i] for i in entered if i in granted]
    assert times == sorted(times)
    # Nothing leaks: no waiter or call left over.
    status = budget.snapshot()
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
        async with budget.slot(time.monotonic() + 5.0):
            start = time.monotonic()
            await asyncio.sleep(latency)
            spans.append((start, time.monotonic()))

    began = time.monotonic()
    await asyncio.gather(*(call(rng.uniform(0.0, 0.05)) for _ in range(3 * limit)))
    elapsed = time.monotonic() - began

    assert len(spans) == 3 * limit
    assert max_arrivals_in_any_window(spans, 1.0) <= limit
    # Burst, then two paced rounds of one window plus latency each: about 2.1 s.
    assert 2.0 <= elapsed < 3.5
