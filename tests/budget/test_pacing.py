"""A paced budget (`gateway.budget.pacing`): a whole burst when idle, spread grants once demand
exceeds the budget, and never a grant the completion-time rule would refuse.

A `LocalBudget` on a manual clock: every instant is exact and nothing sleeps. Calls take no time
(each completes as soon as it is granted), so each slot frees exactly one window after its grant.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.budget import LocalBudget
from gateway.budget.pacing import GrantPacer
from tests.budget.test_budget import max_arrivals_in_any_window
from tests.jobs.jobfakes import FOREVER, ManualClock, settle

LIMIT, WINDOW = 20, 1.0


class Calls:
    """Callers that each take a slot, record when, and complete at once."""

    def __init__(self, budget: LocalBudget, clock: ManualClock) -> None:
        self.budget = budget
        self.clock = clock
        self.granted: list[float] = []

    def start(self, count: int, key: str = "load") -> list[asyncio.Task[None]]:
        return [asyncio.ensure_future(self._call(key)) for _ in range(count)]

    async def _call(self, key: str) -> None:
        async with self.budget.slot(FOREVER, key=key):
            self.granted.append(self.clock())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def paced(clock: ManualClock, *, paced: bool = True) -> LocalBudget:
    return LocalBudget(
        LIMIT, WINDOW, clock=clock, call_later=clock.call_later, paced=paced, max_in_flight=1000
    )


def most_at_one_instant(times: list[float]) -> int:
    return max(times.count(t) for t in set(times))


async def test_a_request_that_finds_the_budget_idle_gets_the_whole_burst_at_once(
    clock: ManualClock,
) -> None:
    calls = Calls(paced(clock), clock)
    t0 = clock()
    await asyncio.gather(*calls.start(LIMIT))
    assert calls.granted == [t0] * LIMIT


async def test_under_sustained_demand_slots_freed_together_are_granted_spread_out(
    clock: ManualClock,
) -> None:
    calls = Calls(paced(clock), clock)
    t0 = clock()
    tasks = calls.start(4 * LIMIT)
    await clock.run_until_idle()
    await asyncio.gather(*tasks)

    later = [t for t in calls.granted if t > t0]
    assert calls.granted.count(t0) == LIMIT  # the first burst, whole
    # The first burst's slots all free at t0 + window; without the pacer the next LIMIT calls
    # would all go then. With it: a tenth of the limit at once, then one per window / limit.
    assert most_at_one_instant(later) == LIMIT // 10
    gaps = [b - a for a, b in itertools.pairwise(later) if b > a]
    assert min(gaps) == pytest.approx(WINDOW / LIMIT)
    # And the rule still holds: never more than the limit in any window.
    spans = [(t, t) for t in calls.granted]
    assert max_arrivals_in_any_window(spans, WINDOW) <= LIMIT


async def test_without_the_pacer_the_lumps_come_back_every_window(clock: ManualClock) -> None:
    # What the pacer is for: the unpaced budget regrants the whole lump at once, lap after lap.
    calls = Calls(paced(clock, paced=False), clock)
    tasks = calls.start(3 * LIMIT)
    await clock.run_until_idle()
    await asyncio.gather(*tasks)
    assert most_at_one_instant(calls.granted[LIMIT:]) == LIMIT


async def test_the_whole_burst_comes_back_after_a_window_without_waiters(
    clock: ManualClock,
) -> None:
    calls = Calls(paced(clock), clock)
    tasks = calls.start(2 * LIMIT)
    await clock.run_until_idle()
    await asyncio.gather(*tasks)
    # Nobody waits for a window and more: the slots and the pacer's tokens are back.
    await clock.advance(2 * WINDOW)
    calls.granted.clear()
    t1 = clock()
    await asyncio.gather(*calls.start(LIMIT, key="newcomer"))
    assert calls.granted == [t1] * LIMIT


async def test_a_paced_grant_never_comes_later_than_the_pacer_s_rate_allows(
    clock: ManualClock,
) -> None:
    # Slots free while the pacer holds a waiter back: it is woken by the pacer's own timer.
    calls = Calls(paced(clock), clock)
    tasks = calls.start(LIMIT + LIMIT // 10 + 1)
    await settle()
    await clock.advance(WINDOW)  # the first burst's slots free now
    await settle()
    granted_at_window = calls.granted.count(clock())
    assert granted_at_window == LIMIT // 10
    await clock.advance(WINDOW / LIMIT)
    await asyncio.gather(*tasks)
    assert calls.granted[-1] == pytest.approx(clock())


def test_the_pacer_s_tokens() -> None:
    pacer = GrantPacer(100, 1.0, now=0.0)
    assert pacer.allowed(0.0) == 100
    pacer.spend(100, 0.0)
    assert pacer.allowed(0.0) == 0
    assert pacer.next_token_at(0.0) == pytest.approx(0.01)
    pacer.held_back()
    assert pacer.allowed(5.0) == 10  # capped while demand exceeds the budget
    pacer.idle()
    assert pacer.allowed(5.0) == 10
    assert pacer.allowed(6.0) == 100  # refilled to a whole burst a window after
    with pytest.raises(ValueError, match="limit >= 1"):
        GrantPacer(0, 1.0, now=0.0)
