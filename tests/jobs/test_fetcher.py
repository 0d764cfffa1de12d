"""JobFetcher: cache, coalescing, budget, retries and deadlines, against a fake upstream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.jobs.cache import CacheEntry
from gateway.jobs.fetcher import FetchResult
from gateway.jobs.retry import RetryPolicy
from gateway.model import Job, JobState
from gateway.shared.backend import BackendUnavailable
from tests.budget.test_budget import max_arrivals_in_any_window

from .jobfakes import ManualClock, Rig, make_job, settle


async def test_serves_jobs_and_not_found_in_order() -> None:
    rig = Rig()
    a, b = make_job("a"), make_job("b", JobState.QUEUING)
    rig.source.add(a, b)
    assert await rig.fetcher.get_many(["b", "missing", "a"], rig.deadline()) == [b, None, a]
    assert sorted(rig.source.calls) == ["a", "b", "missing"]


async def test_cache_hit_costs_no_call() -> None:
    rig = Rig()
    job = make_job("a")
    await rig.cache.put("a", job)
    assert await rig.fetcher.get_many(["a"], rig.deadline()) == [job]
    assert rig.source.calls == []
    stats = rig.fetcher.stats()
    assert (stats.cache_hits, stats.cache_misses, stats.upstream_calls) == (1, 0, 0)


async def test_answers_are_cached_by_state() -> None:
    rig = Rig()
    rig.source.add(make_job("done"), make_job("busy", JobState.ANALYSING))
    await rig.fetcher.get_many(["done", "busy"], rig.deadline())
    await rig.fetcher.get_many(["done", "busy"], rig.deadline())
    assert sorted(rig.source.calls) == ["busy", "done"]
    rig.clock.now += 1.0  # the running ttl
    await rig.fetcher.get_many(["done", "busy"], rig.deadline())
    assert sorted(rig.source.calls) == ["busy", "busy", "done"]


async def test_not_found_is_remembered_briefly() -> None:
    rig = Rig()
    assert await rig.fetcher.get_many(["nope"], rig.deadline()) == [None]
    assert await rig.fetcher.get_many(["nope"], rig.deadline()) == [None]
    assert rig.source.calls == ["nope"]
    rig.clock.now += 5.0  # the not-found ttl
    assert await rig.fetcher.get_many(["nope"], rig.deadline()) == [None]
    assert rig.source.calls == ["nope", "nope"]


async def test_concurrent_requests_share_one_call_per_id() -> None:
    rig = Rig()
    a, b = make_job("a"), make_job("b")
    rig.source.add(a, b)
    rig.source.gate = asyncio.Event()
    first = rig.start(["a", "b"])
    await settle()
    second = rig.start(["b", "a"])
    await settle()
    rig.source.gate.set()
    assert await first == [a, b]
    assert await second == [b, a]
    assert sorted(rig.source.calls) == ["a", "b"]
    assert rig.fetcher.stats().coalesced == 2


async def test_duplicate_ids_in_one_request_share_one_call() -> None:
    rig = Rig()
    a, b = make_job("a"), make_job("b")
    rig.source.add(a, b)
    assert await rig.fetcher.get_many(["a", "a", "b", "a"], rig.deadline()) == [a, a, b, a]
    assert sorted(rig.source.calls) == ["a", "b"]
    assert rig.fetcher.stats().duplicates == 2


async def test_invalid_ids_cost_no_call() -> None:
    rig = Rig()
    ok = make_job("ok")
    rig.source.add(ok)
    results = await rig.fetcher.get_many(["", "x" * 65, "no spaces", "ok"], rig.deadline())
    assert [type(r) for r in results[:3]] == [errors.InvalidJobId] * 3
    assert results[3] == ok
    assert rig.source.calls == ["ok"]
    assert rig.fetcher.stats().invalid_ids == 3


async def test_throttled_call_is_retried_through_the_budget() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    job = make_job("a")
    rig.source.add(job)
    rig.source.fail("a", errors.UpstreamThrottled("Throttling.User", retry_after=0.5))
    task = rig.start(["a"])
    await rig.clock.advance(0.499)
    # The error's retry_after (0.5 s) wins over the backoff (at most 0.1 s for the first retry).
    assert rig.source.calls == ["a"]
    await rig.clock.advance(0.001)
    assert await task == [job]
    assert rig.source.calls == ["a", "a"]
    # Both calls took a budget slot, and both slots are still held.
    assert rig.budget.status().held == 2
    stats = rig.fetcher.stats()
    assert (stats.upstream_calls, stats.retries, stats.failures) == (2, 1, 0)


async def test_retries_end_with_the_last_error() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    last = errors.UpstreamUnavailable("The upstream answered 503 (third time).")
    rig.source.fail("a", errors.UpstreamUnavailable("503"), errors.UpstreamTimeout("timeout"), last)
    task = rig.start(["a"])
    await rig.clock.advance(1.0)
    assert await task == [last]
    assert rig.source.calls == ["a", "a", "a"]
    assert rig.fetcher.stats().failures == 1


async def test_no_retry_that_would_outlast_the_deadline() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    throttled = errors.UpstreamThrottled("Throttling.User", retry_after=0.5)
    rig.source.fail("a", throttled)
    results = await rig.fetcher.get_many(["a"], rig.deadline(0.3))
    assert results == [throttled]
    assert rig.source.calls == ["a"]


async def test_non_retryable_error_is_returned_at_once() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    denied = errors.UpstreamAuthFailed("The signature does not match.")
    rig.source.fail("a", denied)
    assert await rig.fetcher.get_many(["a"], rig.deadline()) == [denied]
    assert rig.source.calls == ["a"]
    assert rig.fetcher.stats().retries == 0


async def test_one_failing_id_does_not_fail_the_others_and_is_not_cached() -> None:
    rig = Rig()
    a, c = make_job("a"), make_job("c")
    rig.source.add(a, c, make_job("b"))
    unavailable = errors.UpstreamUnavailable("503")
    rig.source.fail("b", unavailable)
    assert await rig.fetcher.get_many(["a", "b", "c"], rig.deadline()) == [a, unavailable, c]
    # The failure was not cached: the next request asks again (and gets the job).
    assert await rig.fetcher.get_many(["b"], rig.deadline()) == [make_job("b")]
    assert rig.source.calls.count("b") == 2


async def test_a_bug_reaches_every_waiter_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.source.add(make_job("ok"))
    bug = ZeroDivisionError("division by zero")
    rig.source.fail("a", bug)
    rig.source.gate = asyncio.Event()
    first = rig.start(["a", "ok"])
    await settle()
    second = rig.start(["a"])
    await settle()
    with caplog.at_level(logging.ERROR, logger="gateway.jobs.fetcher"):
        rig.source.gate.set()
        assert await first == [bug, make_job("ok")]
        assert await second == [bug]
    assert "Fetching job a failed unexpectedly" in caplog.text
    assert rig.fetcher.stats().in_flight == 0


async def test_concurrency_limit_bounds_calls_in_flight() -> None:
    rig = Rig(concurrency=2)
    ids = [f"j{i}" for i in range(5)]
    rig.source.add(*(make_job(i) for i in ids))
    rig.source.latency = 0.1
    task = rig.start(ids)
    await rig.clock.advance(1.0)
    assert await task == [make_job(i) for i in ids]
    assert rig.source.max_active == 2


@pytest.mark.parametrize("requesters", [("big", "small"), (None, None)])
async def test_one_id_is_served_within_a_window_behind_another_requesters_thousand(
    requesters: tuple[str | None, str | None],
) -> None:
    big_requester, small_requester = requesters  # None: each call is a requester of its own
    rig = Rig(limit=100, concurrency=100)
    t0 = rig.clock()
    big = rig.start([f"j{i}" for i in range(1000)], seconds=60.0, requester=big_requester)
    await settle()
    assert len(rig.source.calls) == 100
    # Arrival order would put "x" behind 900 ids, 9 windows away: past its 2 s deadline.
    small = rig.start(["x"], seconds=2.0, requester=small_requester)
    await settle()
    await rig.clock.advance(1.0)
    assert small.done()
    assert await small == [None]
    assert rig.source.calls.index("x") <= 101
    assert rig.source.spans[rig.source.calls.index("x")][0] == t0 + 1.0
    assert not big.done()
    await rig.clock.run_until_idle()
    assert await big == [None] * 1000
    assert max_arrivals_in_any_window(rig.source.spans, 1.0) <= 100


async def test_a_throttled_call_slows_the_budget_down() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    job = make_job("a")
    rig.source.add(job)
    for job_id in ("a", "b"):
        rig.source.fail(job_id, errors.UpstreamThrottled("Throttling.User"))
    task = rig.start(["a", "b"])
    await settle()
    # Two throttles of one burst: one decrease.
    status = rig.budget.status()
    assert (status.limit, status.effective_limit) == (100, 50)
    await rig.clock.advance(1.0)
    assert await task == [job, None]
    assert rig.source.calls == ["a", "b", "a", "b"]
    assert rig.budget.status().effective_limit == 55  # recovering, 5 calls per second


async def test_shed_at_once_when_the_budget_cannot_make_the_deadline() -> None:
    rig = Rig(limit=1)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    results = await rig.fetcher.get_many(["a"], rig.deadline(0.5))
    assert len(results) == 1
    assert isinstance(results[0], errors.BudgetExhausted)
    assert results[0].retry_after == pytest.approx(1.0)
    assert rig.source.calls == []
    gate.set()
    await holder


async def test_budget_wait_ends_at_the_deadline_without_a_call() -> None:
    rig = Rig(limit=1)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    task = rig.start(["a"], seconds=2.0)
    await settle()
    assert rig.budget.status().waiting == 1

    await rig.clock.advance(2.0)
    (result,) = await task
    assert isinstance(result, errors.BudgetExhausted)
    assert rig.budget.status().waiting == 0

    gate.set()
    await holder
    await rig.clock.advance(5.0)
    assert rig.source.calls == []
    assert rig.fetcher.stats().in_flight == 0


async def test_fetch_abandoned_by_its_last_waiter_consumes_no_budget() -> None:
    rig = Rig(limit=1)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    hasty = rig.start(["a"], seconds=2.0)
    await settle()
    gone = rig.start(["a"], seconds=5.0)  # raises the fetch's deadline to 5 s
    await rig.clock.advance(1.0)
    gone.cancel()  # its request went away
    await rig.clock.advance(1.0)
    (result,) = await hasty
    assert isinstance(result, errors.BudgetExhausted)
    # Nobody waits for "a" any more: the fetch left the budget queue instead of waiting on.
    assert rig.budget.status().waiting == 0
    stats = rig.fetcher.stats()
    assert (stats.abandoned, stats.timeouts, stats.in_flight) == (1, 1, 0)
    gate.set()
    await holder
    await rig.clock.advance(10.0)
    assert rig.source.calls == []


async def test_a_fetch_abandoned_during_its_call_is_not_retried() -> None:
    rig = Rig(retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=1.0))
    rig.source.add(make_job("a"))
    rig.source.fail("a", errors.UpstreamUnavailable("503"))
    rig.source.gate = asyncio.Event()
    gone = rig.start(["a"], seconds=5.0)
    await settle()
    assert rig.source.calls == ["a"]  # the call is under way: it cannot be taken back
    gone.cancel()  # its only request went away
    await settle()
    rig.source.gate.set()  # the call fails: a retry would be for nobody
    await settle()
    await rig.clock.advance(5.0)
    assert rig.source.calls == ["a"]
    stats = rig.fetcher.stats()
    assert (stats.abandoned, stats.retries, stats.in_flight) == (1, 0, 0)


async def test_fetch_waiting_for_max_in_flight_ends_at_the_deadline_without_a_call() -> None:
    rig = Rig(concurrency=1)
    rig.source.add(make_job("slow"), make_job("a"))
    rig.source.gate = asyncio.Event()
    slow = rig.start(["slow"], seconds=60.0)
    await settle()
    task = rig.start(["a"], seconds=2.0)
    await settle()
    # The budget is far from its limit: only the process's one call in flight holds "a" back.
    assert rig.budget.status().waiting == 1
    await rig.clock.advance(2.0)
    (result,) = await task
    assert isinstance(result, errors.BudgetExhausted)
    assert rig.budget.status().waiting == 0
    rig.source.gate.set()
    assert await slow == [make_job("slow")]
    await rig.clock.advance(5.0)
    assert rig.source.calls == ["slow"]
    assert rig.fetcher.stats().in_flight == 0


async def test_cancelled_request_leaves_its_fetch_and_the_budget_queue() -> None:
    rig = Rig(limit=1)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    task = rig.start(["a", "b"])
    await settle()
    assert rig.budget.status().waiting == 2
    task.cancel()
    await settle()
    assert task.cancelled()
    assert rig.budget.status().waiting == 0
    stats = rig.fetcher.stats()
    assert (stats.abandoned, stats.in_flight) == (2, 0)
    gate.set()
    await holder
    await rig.clock.advance(5.0)
    assert rig.source.calls == []


async def test_shared_fetch_survives_one_of_its_waiters_leaving() -> None:
    rig = Rig(limit=1)
    job = make_job("a")
    rig.source.add(job)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    leaving = rig.start(["a"])
    staying = rig.start(["a"])
    await settle()
    leaving.cancel()
    gate.set()
    await holder
    await rig.clock.advance(1.0)
    assert await staying == [job]
    assert rig.source.calls == ["a"]


async def test_fetch_waits_as_long_as_its_most_patient_waiter() -> None:
    rig = Rig(limit=1)
    job = make_job("a")
    rig.source.add(job)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    t0 = rig.clock()
    hasty = rig.start(["a"], seconds=2.0)
    await settle()
    patient = rig.start(["a"], seconds=5.0)
    await rig.clock.advance(1.5)
    gate.set()  # the held slot completes at t0 + 1.5 and frees at t0 + 2.5
    await holder

    await rig.clock.advance(0.5)
    (first,) = await hasty
    assert isinstance(first, errors.BudgetExhausted)
    assert not patient.done()
    await rig.clock.advance(0.5)
    assert await patient == [job]
    assert rig.source.calls == ["a"]
    assert rig.source.spans[0][0] == t0 + 2.5


async def test_past_deadline_serves_the_cache_and_sheds_the_rest() -> None:
    rig = Rig()
    cached = make_job("cached")
    await rig.cache.put("cached", cached)
    rig.source.add(make_job("other"))
    results = await rig.fetcher.get_many(["cached", "other"], rig.clock() - 1.0)
    assert results[0] == cached
    assert isinstance(results[1], errors.BudgetExhausted)
    await settle()
    assert rig.source.calls == []
    assert rig.fetcher.stats().in_flight == 0


# --- one cache call per request --------------------------------------------------------------


async def test_one_cache_call_per_request_for_all_its_distinct_valid_ids() -> None:
    rig = Rig()
    rig.source.add(make_job("a"), make_job("b"))
    await rig.cache.put("c", make_job("c"))
    rig.log.clear()

    results = await rig.fetcher.get_many(["a", "bad id", "c", "a", "b"], rig.deadline())

    assert results[2:] == [make_job("c"), make_job("a"), make_job("b")]
    assert [entry for entry in rig.log if entry.startswith("get")] == ["get_many a,c,b"]
    rig.log.clear()
    assert await rig.fetcher.get_many(["b", "a", "c"], rig.deadline()) == [
        make_job("b"),
        make_job("a"),
        make_job("c"),
    ]
    assert rig.log == ["get_many b,a,c"]  # all cached: that one call, and nothing else
    stats = rig.fetcher.stats()
    assert (stats.cache_hits, stats.cache_misses) == (4, 2)


async def test_a_request_of_invalid_ids_only_asks_the_cache_nothing() -> None:
    rig = Rig()
    results = await rig.fetcher.get_many(["bad id", ""], rig.deadline())
    assert [type(result) for result in results] == [errors.InvalidJobId] * 2
    assert rig.log == []


async def test_a_broken_cache_costs_calls_not_answers(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.source.add(make_job("a"))

    async def broken(job_ids: Sequence[str]) -> list[CacheEntry | None]:
        raise RuntimeError("the cache is broken")

    rig.cache.get_many = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gateway.jobs.fetcher"):
        assert await rig.fetcher.get_many(["a", "b"], rig.deadline()) == [make_job("a"), None]
    assert "Snapshot cache lookup of 2 jobs failed" in caplog.text
    assert sorted(rig.source.calls) == ["a", "b"]


# --- claims: one call per id at a time across processes ---------------------------------------


async def test_the_claim_comes_after_the_in_flight_map_and_is_released_after_the_put() -> None:
    rig = Rig(with_claims=True)
    rig.source.add(make_job("a"))
    rig.source.gate = asyncio.Event()
    first = rig.start(["a"])
    await settle()
    second = rig.start(["a"])  # joins the fetch in flight: no second claim
    await settle()
    rig.source.gate.set()
    assert await first == await second == [make_job("a")]
    await settle()
    assert rig.log == ["get_many a", "claim a", "get_many a", "put a", "release a"]
    assert rig.claims is not None
    assert rig.claims.held == set()


async def test_an_id_another_process_fetches_waits_for_its_answer_and_calls_nothing() -> None:
    rig = Rig(with_claims=True)
    assert rig.claims is not None
    rig.claims.elsewhere.add("a")
    rig.source.add(make_job("a"), make_job("b"))
    task = rig.start(["a", "b"])
    await rig.clock.advance(0.1)
    assert not task.done()
    assert rig.source.calls == ["b"]  # "b" was not held: called at once
    assert rig.claims.attempts["a"] == 5  # at 0, 0.025, ... 0.1: polling, nothing else

    answer = make_job("a", JobState.ANALYSING)
    rig.claims.answer_elsewhere("a", answer)
    await rig.clock.advance(0.025)
    assert await task == [answer, make_job("b")]
    assert rig.source.calls == ["b"]
    assert "put a" not in rig.log  # in the shared cache already
    assert rig.budget.status().held == 1  # b's slot only
    stats = rig.fetcher.stats()
    assert (stats.claim_waits, stats.answered_elsewhere, stats.upstream_calls) == (1, 1, 1)


async def test_an_id_whose_holder_gives_up_is_claimed_and_called_here() -> None:
    rig = Rig(with_claims=True)
    assert rig.claims is not None
    rig.claims.elsewhere.add("a")
    rig.source.add(make_job("a"))
    task = rig.start(["a"])
    await rig.clock.advance(0.05)
    rig.claims.elsewhere.discard("a")  # the holder failed (and released), or its lease expired
    await rig.clock.advance(0.025)
    assert await task == [make_job("a")]
    assert rig.source.calls == ["a"]


async def test_a_fetch_dropped_while_another_process_fetches_costs_nothing() -> None:
    rig = Rig(with_claims=True)
    assert rig.claims is not None
    rig.claims.elsewhere.add("a")
    task = rig.start(["a"], seconds=0.2)
    await rig.clock.advance(0.3)
    (result,) = await task
    assert isinstance(result, errors.BudgetExhausted)
    attempts = rig.claims.attempts["a"]
    await rig.clock.advance(1.0)
    assert rig.claims.attempts["a"] == attempts  # stopped polling with its last waiter
    assert rig.source.calls == []
    assert rig.budget.status().held == 0
    stats = rig.fetcher.stats()
    assert (stats.abandoned, stats.in_flight) == (1, 0)


async def test_a_fetch_dropped_during_its_claim_round_trip_releases_what_it_took() -> None:
    rig = Rig(with_claims=True)
    assert rig.claims is not None
    rig.claims.gate = asyncio.Event()
    task = rig.start(["a"])
    await settle()
    task.cancel()
    await settle()
    assert task.cancelled()
    rig.claims.gate.set()  # the round trip ends after all, with a lease
    await settle()
    assert rig.log[-2:] == ["claim a", "release a"]
    assert rig.claims.held == set()
    assert rig.source.calls == []


async def test_a_fetch_dropped_in_the_budget_queue_releases_its_claim() -> None:
    rig = Rig(limit=1, with_claims=True)
    assert rig.claims is not None
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    task = rig.start(["a"])
    await settle()
    assert rig.claims.held == {"a"}
    task.cancel()
    await settle()
    assert rig.claims.held == set()
    gate.set()
    await holder
    assert rig.source.calls == []


async def test_a_failed_fetch_releases_its_claim_and_stores_nothing() -> None:
    rig = Rig(with_claims=True)
    unavailable = errors.UpstreamUnavailable("503")
    rig.source.fail("a", unavailable)
    assert await rig.fetcher.get_many(["a"], rig.deadline()) == [unavailable]
    await settle()
    assert rig.log == ["get_many a", "claim a", "release a"]


@pytest.mark.parametrize(
    ("failure", "logged"),
    [
        (BackendUnavailable("redis", "ConnectionError: refused"), "Claiming job a failed"),
        (ZeroDivisionError("a bug"), "Claiming job a failed unexpectedly"),
    ],
)
async def test_a_claim_that_fails_never_fails_the_fetch(
    failure: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(with_claims=True)
    assert rig.claims is not None
    rig.claims.failure = failure
    rig.source.add(make_job("a"))
    with caplog.at_level(logging.WARNING, logger="gateway.jobs.fetcher"):
        assert await rig.fetcher.get_many(["a"], rig.deadline()) == [make_job("a")]
    assert logged in caplog.text
    assert rig.source.calls == ["a"]


# --- invariants under random traffic --------------------------------------------------------

POOL = ["a", "b", "c", "d", "bad id"]


@dataclass(frozen=True)
class PlannedRequest:
    arrival: float
    ids: list[str]
    patience: float
    cancel_after: float | None


planned_requests = st.builds(
    PlannedRequest,
    arrival=st.floats(0, 4).map(lambda x: round(x, 2)),
    ids=st.lists(st.sampled_from(POOL), min_size=1, max_size=6),
    patience=st.floats(0, 4).map(lambda x: round(x, 2)),
    cancel_after=st.one_of(st.none(), st.floats(0, 4).map(lambda x: round(x, 2))),
)


async def _simulate(
    limit: int, latency: float, failing: list[str], plan: list[PlannedRequest]
) -> tuple[Rig, list[tuple[PlannedRequest, list[FetchResult] | None]]]:
    rig = Rig(
        limit=limit,
        concurrency=3,
        retry=RetryPolicy(max_retries=2, base_delay=0.1, max_delay=0.5),
        clock=ManualClock(start=0.0),
    )
    rig.source.latency = latency
    rig.source.add(*(make_job(i, JobState.QUEUING) for i in ("a", "b", "c")))  # "d": not found
    for job_id in failing:
        rig.source.fail(job_id, errors.UpstreamUnavailable("503"), errors.UpstreamTimeout("slow"))
    outcomes: list[tuple[PlannedRequest, list[FetchResult] | None]] = []

    async def request(planned: PlannedRequest) -> None:
        try:
            await rig.clock.sleep(planned.arrival)
            results = await rig.fetcher.get_many(planned.ids, rig.deadline(planned.patience))
        except asyncio.CancelledError:
            outcomes.append((planned, None))
            raise
        outcomes.append((planned, results))

    def canceller(task: asyncio.Task[None]) -> Callable[[], None]:
        def cancel() -> None:
            task.cancel()

        return cancel

    tasks = [asyncio.create_task(request(p)) for p in plan]
    for task, planned in zip(tasks, plan, strict=True):
        if planned.cancel_after is not None:
            rig.clock.call_later(planned.arrival + planned.cancel_after, canceller(task))
    await rig.clock.run_until_idle()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rig, outcomes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 3),
    latency=st.sampled_from([0.0, 0.3, 1.2]),
    failing=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=2),
    plan=st.lists(planned_requests, max_size=12),
)
def test_random_traffic_keeps_every_promise(
    limit: int, latency: float, failing: list[str], plan: list[PlannedRequest]
) -> None:
    rig, outcomes = asyncio.run(_simulate(limit, latency, failing, plan))

    # Every request ended: answered (one result per id, of the right kind) or cancelled.
    assert len(outcomes) == len(plan)
    for planned, results in outcomes:
        if results is None:
            assert planned.cancel_after is not None
            continue
        assert len(results) == len(planned.ids)
        for job_id, result in zip(planned.ids, results, strict=True):
            if job_id == "bad id":
                assert isinstance(result, errors.InvalidJobId)
            elif isinstance(result, Job):
                assert result.id == job_id
            else:
                assert result is None or isinstance(result, errors.GatewayError)
                assert result is not None or job_id == "d"
    # One upstream call per id at a time, and the account's limit held for the receiver.
    assert rig.source.max_active_per_id <= 1
    assert max_arrivals_in_any_window(rig.source.spans, 1.0) <= limit
    assert rig.source.max_active <= 3
    # Nothing left behind.
    assert rig.fetcher.stats().in_flight == 0
    status = rig.budget.status()
    assert (status.in_flight, status.waiting) == (0, 0)


async def test_aclose_stops_the_fetches_under_way() -> None:
    rig = Rig()
    rig.source.add(make_job("a"))
    rig.source.gate = asyncio.Event()  # the call never ends by itself
    task = rig.start(["a"], seconds=60.0)
    await settle()
    assert rig.fetcher.stats().in_flight == 1

    await rig.fetcher.aclose(grace=1.0)

    (result,) = await task
    assert isinstance(result, errors.ShuttingDown)  # its waiter is told, not left hanging
    assert rig.fetcher.stats().in_flight == 0
