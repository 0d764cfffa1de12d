"""RedisBudget across processes: the limit, leases, AIMD and Redis failures, on a real Redis.

The behaviour shared with `LocalBudget` is tested in test_budget.py (its `redis` harness).
Here, several `RedisBudget` instances on one prefix stand for several gateway processes.
Time is real and windows short.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from gateway import errors
from gateway.budget import QUERY_JOB, RedisBudget
from gateway.budget.aimd import AimdRule, Decrease
from gateway.settings import GatewaySettings
from gateway.shared.backend import BackendUnavailable, open_redis
from tests.budget.test_budget import max_arrivals_in_any_window
from tests.jobs.jobfakes import FOREVER
from tests.jobs.redisutil import delete_prefix, private_redis, unique_prefix, wait_until_up
from tests.support.redis import key_names, scored_members, server_seconds


async def until(condition: Callable[[], bool], what: str, patience: float = 30.0) -> None:
    """Wait for `condition` (polling); `patience` only catches a hang, never a slow machine."""
    give_up = time.monotonic() + patience
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"Still waiting after {patience} s for {what}.")
        await asyncio.sleep(0.005)


@pytest.fixture
def client(shared_redis: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """One Redis, or a Redis Cluster: every test that takes it runs on both."""
    return shared_redis


@pytest.fixture
async def prefix(client: redis.asyncio.Redis) -> AsyncIterator[str]:
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(client, prefix)


class Fleet:
    """Budgets on one prefix: one per simulated process."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.budgets: list[RedisBudget] = []

    def process(
        self,
        *,
        limit: int,
        window: float,
        lease: float = 2.0,
        max_in_flight: int = 100,
        client: redis.asyncio.Redis | None = None,
    ) -> RedisBudget:
        budget = RedisBudget(
            client or self.client,
            operation=QUERY_JOB,
            limit=limit,
            window=window,
            max_in_flight=max_in_flight,
            lease=lease,
            prefix=self.prefix,
        )
        self.budgets.append(budget)
        return budget

    async def aclose(self) -> None:
        for budget in self.budgets:
            await budget.aclose()


@pytest.fixture
async def fleet(client: redis.asyncio.Redis, prefix: str) -> AsyncIterator[Fleet]:
    fleet = Fleet(client, prefix)
    try:
        yield fleet
    finally:
        await fleet.aclose()


async def test_two_processes_never_exceed_the_limit_together(fleet: Fleet) -> None:
    limit, window = 5, 0.25
    # The margin, as in production: room for Redis's clock and ours to round differently.
    processes = [fleet.process(limit=limit, window=window + 0.005) for _ in range(2)]
    rng = random.Random(11)
    spans: list[tuple[float, float]] = []
    grants: list[tuple[float, int]] = []

    async def call(process: int, latency: float) -> None:
        budget = processes[process]
        async with budget.slot(time.monotonic() + 10.0, key=rng.randrange(3)):
            start = time.monotonic()
            grants.append((start, process))
            await asyncio.sleep(latency)
            spans.append((start, time.monotonic()))

    began = time.monotonic()
    await asyncio.gather(
        *(call(process, rng.uniform(0.0, 0.03)) for process in (0, 1) for _ in range(15))
    )
    elapsed = time.monotonic() - began

    assert len(spans) == 30
    # Measured as the upstream would: whatever the network did, no window saw more than 5.
    assert max_arrivals_in_any_window(spans, window) <= limit
    # A burst, then paced: 30 calls at 5 per (window + latency) is at least 5 windows.
    assert elapsed >= 5 * window
    # Neither process waited for the other to finish: both were served from the first rounds.
    first_rounds = [process for start, process in sorted(grants)[:15]]
    assert {0, 1} <= set(first_rounds)
    for budget in processes:
        status = budget.status()
        assert (status.in_flight, status.waiting) == (0, 0)


async def test_the_fleet_limit_counts_every_process_slots(fleet: Fleet) -> None:
    first, second = (fleet.process(limit=3, window=0.2) for _ in range(2))
    gate = asyncio.Event()

    async def hold(budget: RedisBudget) -> None:
        async with budget.slot(FOREVER):
            await gate.wait()

    holders = [asyncio.create_task(hold(first)) for _ in range(2)]
    await until(lambda: first.status().in_flight == 2, "two slots of the first process")
    # One slot left for the fleet: the second process gets it, then is full.
    holders.append(asyncio.create_task(hold(second)))
    await until(lambda: second.status().in_flight == 1, "the fleet's last slot")
    with pytest.raises(errors.BudgetExhausted) as caught:
        async with second.slot(time.monotonic() + 0.1):
            raise AssertionError("must not be granted")
    # Calls in flight free one window after they complete, at the earliest.
    assert 0 < caught.value.retry_after <= 0.2 + 0.01
    gate.set()
    await asyncio.gather(*holders)


async def test_a_slot_never_released_frees_when_its_lease_expires(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    lease, window = 0.5, 0.1
    dead = fleet.process(limit=1, window=window, lease=lease)
    alive = fleet.process(limit=1, window=window, lease=lease)
    # A process takes a slot and dies mid-call: it never releases it.
    stuck = dead.slot(FOREVER)
    await stuck.__aenter__()
    with pytest.raises(errors.BudgetExhausted):
        async with alive.slot(time.monotonic() + window / 2):
            raise AssertionError("must not be granted: the slot is held")
    async with alive.slot(time.monotonic() + 30.0):
        # Granted: the dead call's lease expired (nothing else could free its slot).
        slots_key = alive.redis_ledger.keys[0]
        members = [member for member, _ in await scored_members(fleet.client, slots_key)]
        assert not any(member.startswith(dead.redis_ledger.token) for member in members)
    # Had the "dead" call completed after all, so late, it says so.
    with caplog.at_level(logging.WARNING, logger="gateway.budget.redis_ledger"):
        await stuck.__aexit__(None, None, None)
    assert "A QueryIProductionJob call outlived its budget lease of 0.5 s" in caplog.text


async def test_a_throttle_slows_the_whole_fleet_once_per_burst(fleet: Fleet) -> None:
    first, second = (fleet.process(limit=10, window=0.2) for _ in range(2))
    await first.throttled()
    await second.throttled()  # the same burst, seen by another process: no second decrease
    assert first.status().effective_limit == 5
    assert second.status().effective_limit == 5
    # The fleet holds 5 now: 3 here, 2 there, and the next waits.
    gate = asyncio.Event()

    async def hold(budget: RedisBudget) -> None:
        async with budget.slot(FOREVER):
            await gate.wait()

    holders = [asyncio.create_task(hold(first)) for _ in range(3)]
    holders += [asyncio.create_task(hold(second)) for _ in range(3)]
    await until(
        lambda: first.status().in_flight + second.status().in_flight == 5,
        "the fleet's 5 slots granted",
    )
    assert first.status().waiting + second.status().waiting == 1
    gate.set()
    await asyncio.gather(*holders)
    # Past the holdoff, a throttle is a new burst: halved again, from where it had climbed.
    await asyncio.sleep(0.25)
    await second.throttled()
    assert first.status().effective_limit == 5  # as last seen here
    await first.throttled()  # within the holdoff of second's decrease: same burst
    assert first.status().effective_limit == 2


async def test_a_throttle_stores_the_ceiling_for_the_whole_fleet(
    fleet: Fleet, client: redis.asyncio.Redis
) -> None:
    first, second = (fleet.process(limit=10, window=0.2) for _ in range(2))
    await first.throttled()  # at 10 calls
    state = await client.hgetall(first.redis_ledger.keys[1])
    assert (float(state[b"base"]), float(state[b"ceiling"])) == (5.0, 9.0)
    status = first.status()
    assert (status.effective_limit, status.ceiling) == (5, 9)
    # The other process learns both with its next answer from Redis.
    assert second.status().ceiling == 10
    async with second.slot(FOREVER):
        pass
    status = second.status()
    assert (status.effective_limit, status.ceiling) == (5, 9)


async def hold_all(budget: RedisBudget, count: int, expected: int) -> int:
    """How many of `count` callers that hold their slots get one: once `expected` have, two
    more windows of asking (a budget that grants too much shows it by then)."""
    gate = asyncio.Event()

    async def hold() -> None:
        async with budget.slot(FOREVER):
            await gate.wait()

    holders = [asyncio.create_task(hold()) for _ in range(count)]
    await until(lambda: budget.status().in_flight >= expected, f"{expected} grants")
    await asyncio.sleep(2 * budget.window)
    await until(lambda: budget.redis_ledger.round_trips == 0, "the last answer")
    granted = budget.status().in_flight
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    return granted


@pytest.mark.parametrize(
    ("base", "ceiling", "ago", "grants", "ceiling_grants"),
    [
        (10.0, 90.0, 2.0, 20, 90),  # the climb: 10 + 5 calls per second, under the ceiling
        (50.0, 60.0, 100.0, 61, 61),  # the ceiling: 60 + 50 * (100 / 300) ** 3 = 61.85
        (50.0, 60.0, 200.0, 74, 74),  # 60 + 50 * (200 / 300) ** 3 = 74.81
        (50.0, 60.0, 1000.0, 100, 100),  # both back at the limit
        (50.0, None, 2.0, 60, 100),  # a state without a ceiling: none but the limit
    ],
)
async def test_every_process_computes_the_stored_decrease_with_aimd_rule(
    fleet: Fleet,
    client: redis.asyncio.Redis,
    base: float,
    ceiling: float | None,
    ago: float,
    grants: int,
    ceiling_grants: int,
) -> None:
    budget = fleet.process(limit=100, window=0.2)
    rule = AimdRule(100)
    decrease = Decrease(base=base, ceiling=100.0 if ceiling is None else ceiling)
    assert rule.grants(rule.effective(decrease, ago)) == grants
    assert rule.grants(rule.ceiling(decrease, ago)) == ceiling_grants
    # A decrease `ago` seconds back, on Redis's clock, stored by another process.
    aimd_key = budget.redis_ledger.keys[1]
    seconds, micros = await client.time()
    await client.hset(aimd_key, "at", seconds * 1_000_000 + micros - ago * 1e6)
    await client.hset(aimd_key, "base", base)
    await client.hset(aimd_key, "version", "7")
    if ceiling is not None:
        await client.hset(aimd_key, "ceiling", ceiling)
    granted = await hold_all(budget, 100, grants)
    # The rate climbs while the test runs: by the rule, as far as it may have climbed by now.
    at = await client.hget(aimd_key, "at")
    assert at is not None
    since = await server_seconds(client) - float(at) / 1e6
    latest = rule.grants(rule.effective(decrease, since))
    assert grants <= granted <= latest
    status = budget.status()
    assert grants <= status.effective_limit <= latest
    assert status.ceiling is not None
    assert ceiling_grants <= status.ceiling <= rule.grants(rule.ceiling(decrease, since))


async def test_cancelled_waiters_leave_nothing_in_redis(
    fleet: Fleet, client: redis.asyncio.Redis
) -> None:
    budget = fleet.process(limit=5, window=0.2)
    slots_key, _ = budget.redis_ledger.keys
    # Cancel at several points of the pump's round trip: before it asks, while Redis answers,
    # after the grant but before the waiter resumes (or, late enough, after its call ran).
    # Only a call that ran may hold a slot.
    ran = 0
    for turns in [0, 1, 2, 3, 5, 8, 10, 13, 20, 40]:

        async def wait() -> None:
            nonlocal ran
            async with budget.slot(FOREVER):
                ran += 1

        task = asyncio.create_task(wait())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await budget.released()  # the slot given back (or released) before the next turn
    async with budget.slot(FOREVER):  # and one that is not cancelled
        ran += 1
    await budget.released()
    assert ran <= 10, "every waiter ran: no cancellation was tested"
    # Each call that ran holds its slot until one window after it completed; nothing else
    # is held (a slot of a call in flight would free only at its lease's end, 2 s away).
    seconds, micros = await client.time()
    now = seconds + micros / 1e6
    held = await scored_members(client, slots_key)
    # The slots of calls that completed more than a window ago have expired: at most `ran`
    # are left, the last call's at least, and none of a call still in flight.
    assert 1 <= len(held) <= ran
    assert all(expiry / 1e6 <= now + 0.2 for _, expiry in held), held
    status = budget.status()
    assert (status.in_flight, status.waiting) == (0, 0)


async def test_keys_are_namespaced_and_expire_on_their_own(
    fleet: Fleet, client: redis.asyncio.Redis, prefix: str
) -> None:
    budget = fleet.process(limit=5, window=0.2, lease=1.5)
    gate = asyncio.Event()

    async def hold() -> None:
        async with budget.slot(FOREVER):
            await gate.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: budget.status().in_flight == 1, "a grant")
    base = f"{prefix}:budget:{{{QUERY_JOB}}}"
    assert budget.redis_ledger.keys == (f"{base}:slots", f"{base}:aimd")
    [(member, lease_expiry)] = await scored_members(client, f"{base}:slots")
    # The score of a call in flight is its lease's end (granted just now).
    assert 0 < lease_expiry / 1e6 - await server_seconds(client) <= 1.5
    assert member == f"{budget.redis_ledger.token}:0"
    gate.set()
    await holder
    await budget.throttled()
    assert await key_names(client, f"{prefix}:*") == [
        f"{base}:aimd",
        f"{base}:slots",
    ]
    # Each key outlives what it holds, and no more: the slots their longest lease, the AIMD
    # state its full recovery, each plus a second. The rate is back at 5 calls after 10 s
    # (2.5 at 0.25 per second), but its ceiling, 4.5, needs 300 * 0.2 ** (1/3) = 175.4 s.
    recovered = AimdRule(5).recovered_in(Decrease(base=2.5, ceiling=4.5))
    assert recovered == pytest.approx(175.44, abs=0.01)
    assert 0 < await client.pttl(f"{base}:slots") <= 1_500 + 1_000
    ttl = await client.pttl(f"{base}:aimd")
    assert recovered * 1000 < ttl <= math.ceil((recovered + 0.2) * 1000) + 1_000


async def test_an_unreachable_redis_raises_a_backend_error(fleet: Fleet) -> None:
    nowhere = open_redis("redis://127.0.0.1:1/0", timeout=0.5)  # nothing listens on port 1
    try:
        budget = fleet.process(limit=5, window=0.2, client=nowhere)
        # A deadline far away: waiting for it would end in BudgetExhausted, not this.
        outcomes = await asyncio.gather(
            *(budget.slot(time.monotonic() + 60.0).__aenter__() for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes), outcomes
        assert isinstance(outcomes[0], BackendUnavailable)
        assert "127.0.0.1:1" in outcomes[0].reason
        with pytest.raises(BackendUnavailable):
            await budget.throttled()
        status = budget.status()
        assert (status.in_flight, status.waiting) == (0, 0)
    finally:
        await nowhere.aclose()


async def test_a_redis_that_stops_answering_raises_at_the_client_timeout() -> None:
    with private_redis() as server:
        await wait_until_up(server)
        client = open_redis(server.url, timeout=0.3)
        budget = RedisBudget(
            client, operation=QUERY_JOB, limit=5, window=0.2, max_in_flight=5, lease=1.0
        )
        try:
            async with budget.slot(time.monotonic() + 1.0):
                pass
            server.pause()  # connections stay open; nothing answers
            # A deadline far away: only the client's timeout can end the wait this way.
            with pytest.raises(BackendUnavailable, match="Timeout"):
                async with budget.slot(time.monotonic() + 60.0):
                    raise AssertionError("must not be granted")
            server.resume()
            # A slot granted, then Redis stops: releasing it fails, and says so.
            slot = budget.slot(time.monotonic() + 30.0)
            await slot.__aenter__()
            server.pause()
            with pytest.raises(BackendUnavailable):
                await slot.__aexit__(None, None, None)
            assert budget.status().in_flight == 0
            server.resume()
            # Redis is back: so is the budget.
            async with budget.slot(time.monotonic() + 30.0):
                pass
        finally:
            server.resume()
            await budget.aclose()
            await client.aclose()


async def test_from_settings(client: redis.asyncio.Redis) -> None:
    settings = GatewaySettings(
        upstream_qps=42,
        upstream_window_margin=0.01,
        upstream_concurrency=7,
        connect_timeout=2.0,
        read_timeout=5.0,
        redis_prefix="gw-test",
    )
    budget = RedisBudget.from_settings(client, settings)
    assert (budget.limit, budget.window, budget.max_in_flight) == (42, 1.01, 7)
    assert budget.redis_ledger.keys[0] == "gw-test:budget:{QueryIProductionJob}:slots"


def test_a_lease_shorter_than_the_window_is_refused() -> None:
    client = open_redis("redis://127.0.0.1:6379/0", timeout=1.0)
    with pytest.raises(ValueError, match="lease of at least the window"):
        RedisBudget(client, operation=QUERY_JOB, limit=5, window=1.0, max_in_flight=5, lease=0.5)
