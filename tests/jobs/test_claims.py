"""RedisFetchClaims on a real Redis (127.0.0.1:6379), each test under its own key prefix: first
the claims alone, then two fetchers standing for two processes that share the cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio

from gateway import errors
from gateway.budget import LocalBudget
from gateway.jobs.cache import CacheEntry, LocalSnapshotCache, running_expiry
from gateway.jobs.claims import NO_LEASE, Held, Lease, RedisFetchClaims
from gateway.jobs.failover import FailoverCache, FailoverClaims
from gateway.jobs.fetcher import FetchResult, JobFetcher
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.model import Job
from gateway.mps.decode import decode_job
from gateway.settings import GatewaySettings
from gateway.shared.backend import BackendUnavailable, open_redis
from gateway.shared.switch import BackendSwitch
from tests.support.redis import (
    CLIENT_TIMEOUT,
    REDIS_URL,
    counting_client,
    delete_prefix,
    unique_prefix,
)
from tests.support.waiting import SAFETY_TIMEOUT, eventually, timers_fired

from .jobfakes import NO_RETRY, FakeSource, ManualClock


@pytest.fixture
def client(shared_redis: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """One Redis, or a Redis Cluster: every test that takes it runs on both."""
    return shared_redis


@pytest.fixture
async def prefix(client: redis.asyncio.Redis) -> AsyncIterator[str]:
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(client, prefix)


#: When the test snapshots were fetched (now, fixed so that they compare), and where the caches'
#: wall clock stands.
FETCHED_AT = time.time()


def running(job_id: str) -> Job:
    """A running snapshot decoded from an upstream body (the Redis cache stores the body)."""
    job = decode_job({"JobId": job_id, "State": "Analysing"}, fetched_at=FETCHED_AT)
    assert job is not None
    return job


class Process:
    """What one gateway process holds: its cache and claims over the shared Redis."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        *,
        lease: float = 2.0,
        poll_interval: float = 0.02,
        now: float = FETCHED_AT,
    ) -> None:
        self.cache = RedisSnapshotCache(
            client,
            terminal_ttl=60.0,
            # Far longer than any test: an answer stays until the test is over.
            running_ttl=60.0,
            not_found_ttl=60.0,
            prefix=prefix,
            memo_max_entries=0,
            # The wall clock stands still (at the fetch, unless told): however late in a long
            # run this test comes, its running snapshots are as fresh as it says.
            clock=lambda: now,
        )
        self.claims = RedisFetchClaims(
            client, self.cache, lease=lease, prefix=prefix, poll_interval=poll_interval
        )


def as_lease(outcome: Lease | CacheEntry | Held) -> Lease:
    assert not isinstance(outcome, CacheEntry | Held), outcome
    return outcome


# --- the claims alone --------------------------------------------------------------------------


async def test_one_process_claims_and_the_other_is_told_to_wait(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    a, b = Process(client, prefix, lease=2.0), Process(client, prefix, poll_interval=0.02)

    lease = as_lease(await a.claims.claim("job-1"))
    assert a.claims.key("job-1") == f"{prefix}:fetching:{{job-1}}"
    holder = await client.get(f"{prefix}:fetching:{{job-1}}")
    assert isinstance(holder, bytes)
    assert holder.startswith(f"{a.claims.token}:".encode())
    assert 1_800 < await client.pttl(f"{prefix}:fetching:{{job-1}}") <= 2_000

    held = await b.claims.claim("job-1")
    assert held == Held(retry_in=0.02)

    # The holder stores its answer, then releases: the waiter gets the answer, claims nothing.
    await a.cache.put("job-1", running("job-1"))
    await lease.release()
    assert await client.exists(f"{prefix}:fetching:{{job-1}}") == 0
    assert await b.claims.claim("job-1") == CacheEntry(running("job-1"))
    assert await client.exists(f"{prefix}:fetching:{{job-1}}") == 0


async def test_a_fresh_answer_is_served_instead_of_a_claim_in_one_round_trip(prefix: str) -> None:
    counting = counting_client()
    try:
        process = Process(counting, prefix)
        await process.cache.put("job-1", None)  # "not found" is an answer too
        counting.commands.clear()
        assert await process.claims.claim("job-1") == CacheEntry(None)
        # One pipeline of one EVALSHA (and, on a Redis that lost the script, its reload).
        assert counting.commands in (
            ["PIPELINE EVALSHA"],
            ["PIPELINE EVALSHA", "EVALSHA", "SCRIPT LOAD", "EVALSHA"],
        )
        assert await counting.exists(process.claims.key("job-1")) == 0
    finally:
        await counting.aclose()


async def test_a_claim_whose_holder_never_stores_expires_and_is_taken_over(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    a, b = Process(client, prefix, lease=0.2), Process(client, prefix, poll_interval=0.5)
    as_lease(await a.claims.claim("job-1"))  # and the process dies

    async def expired() -> bool:
        return await client.exists(b.claims.key("job-1")) == 0

    await eventually(expired, "the claim expiring")
    as_lease(await b.claims.claim("job-1"))


async def test_a_waiter_polls_no_later_than_the_lease_s_end(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    a, b = Process(client, prefix, lease=60.0), Process(client, prefix, poll_interval=120.0)
    as_lease(await a.claims.claim("job-1"))
    held = await b.claims.claim("job-1")
    left = await client.pttl(b.claims.key("job-1"))
    assert isinstance(held, Held)
    # The lease's end, before the next poll would come: what was left of the lease then (no
    # more than it had, no less than it has now).
    assert left / 1000 <= held.retry_in <= 60.0


async def test_a_waiter_polls_soon_then_less_and_less_often(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    holder, waiter = Process(client, prefix, lease=2.0), Process(client, prefix)
    waiter.claims = RedisFetchClaims(
        client, waiter.cache, lease=2.0, prefix=prefix, poll_interval=0.01, max_poll_interval=0.1
    )
    as_lease(await holder.claims.claim("job-1"))
    waits = []
    for attempt in range(8):
        held = await waiter.claims.claim("job-1", attempt=attempt)
        assert isinstance(held, Held)
        waits.append(round(held.retry_in, 4))
    assert waits == [0.01, 0.015, 0.0225, 0.0338, 0.0506, 0.0759, 0.1, 0.1]


async def test_a_release_never_drops_another_process_s_claim(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    a, b = Process(client, prefix, lease=0.1), Process(client, prefix)
    late = as_lease(await a.claims.claim("job-1"))

    async def expired() -> bool:  # a's lease, while its call goes on
        return await client.exists(a.claims.key("job-1")) == 0

    await eventually(expired, "a's lease expiring")
    as_lease(await b.claims.claim("job-1"))
    await late.release()
    holder = await client.get(b.claims.key("job-1"))
    assert isinstance(holder, bytes)
    assert holder.startswith(f"{b.claims.token}:".encode())


async def test_a_process_takes_over_a_stale_claim_of_its_own(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    # One fetch per id at a time in a process: a claim of its own that is still there is a
    # release that did not land (or has not yet), never a fetch it should wait for.
    process = Process(client, prefix)
    first = as_lease(await process.claims.claim("job-1"))
    second = as_lease(await process.claims.claim("job-1"))
    await first.release()  # landing late: the newer claim stays
    assert await client.exists(process.claims.key("job-1")) == 1
    await second.release()
    assert await client.exists(process.claims.key("job-1")) == 0


async def test_a_snapshot_this_version_cannot_read_is_claimed_over(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    process = Process(client, prefix)
    await client.set(process.cache.key("job-1"), b'{"v": 99}')
    as_lease(await process.claims.claim("job-1"))


async def test_a_running_snapshot_past_its_expiry_is_claimed_over(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    await Process(client, prefix).cache.put("job-1", running("job-1"))  # Redis holds it ~1 min
    # A process whose clock says the snapshot's expiry, on the grid, has come.
    later = Process(client, prefix, now=running_expiry(FETCHED_AT, 60.0))
    as_lease(await later.claims.claim("job-1"))


async def test_an_unreachable_redis_fails_a_claim_at_once_and_the_failover_goes_ahead() -> None:
    unreachable = open_redis("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    process = Process(unreachable, "unused")
    try:
        with timers_fired() as waited:
            with pytest.raises(BackendUnavailable) as error:
                await process.claims.claim("job-1")
            claims = FailoverClaims(process.claims, BackendSwitch())
            assert await claims.claim("job-1") is NO_LEASE  # go ahead, no claim to release
    finally:
        await unreachable.aclose()
    assert waited == []  # at once: no timeout waited out, no backoff before a retry
    assert "hunter2" not in str(error.value)
    assert claims.degraded


async def test_from_settings_leases_for_the_read_timeout_under_the_prefix() -> None:
    settings = GatewaySettings(redis_prefix="blue", read_timeout=7.5)
    client = open_redis(REDIS_URL, timeout=CLIENT_TIMEOUT)
    try:
        cache = RedisSnapshotCache.from_settings(client, settings)
        claims = RedisFetchClaims.from_settings(client, cache, settings)
    finally:
        await client.aclose()
    assert claims.key("abc") == "blue:fetching:{abc}"
    assert claims.lease == 7.5


# --- two processes' fetchers -------------------------------------------------------------------


class Gateway:
    """One process's fetcher over the shared Redis (as `Services.build` wires it).

    Its budget and fetcher run on the real clock, or on `clock`, which moves only by hand (so
    that nothing in them can wait at all)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        source: FakeSource,
        *,
        lease: float = 2.0,
        clock: ManualClock | None = None,
    ) -> None:
        process = Process(client, prefix, lease=lease)
        self.claims = process.claims
        local = LocalSnapshotCache(
            terminal_ttl=60.0, running_ttl=60.0, not_found_ttl=60.0, max_entries=100
        )
        self.clock: Callable[[], float]
        sleep: Callable[[float], Awaitable[None]]
        if clock is None:
            self.clock, sleep, budget = time.monotonic, asyncio.sleep, LocalBudget(100, 1.0)
        else:
            self.clock, sleep = clock, clock.sleep
            budget = LocalBudget(100, 1.0, clock=clock, call_later=clock.call_later)
        switch = BackendSwitch()
        self.fetcher = JobFetcher(
            source,
            budget,
            FailoverCache(process.cache, local, switch),
            claims=FailoverClaims(process.claims, switch),
            retry=NO_RETRY,
            clock=self.clock,
            sleep=sleep,
        )

    async def get(self, *job_ids: str, seconds: float = SAFETY_TIMEOUT) -> list[FetchResult]:
        return await self.fetcher.get_many(list(job_ids), self.clock() + seconds)


async def test_two_processes_missing_the_same_ids_at_once_make_one_call_per_id(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    source = FakeSource()
    ids = [f"job-{n}" for n in range(10)]
    source.add(*(running(job_id) for job_id in ids))
    source.gate = asyncio.Event()  # the upstream answers once both processes have asked
    a, b = Gateway(client, prefix, source), Gateway(client, prefix, source)

    through_a = asyncio.create_task(a.get(*ids))
    through_b = asyncio.create_task(b.get(*reversed(ids)))

    def each_id_called_by_one_and_awaited_by_the_other() -> bool:
        waits = a.fetcher.stats().claim_waits + b.fetcher.stats().claim_waits
        return len(source.calls) == len(ids) and waits == len(ids)

    await eventually(each_id_called_by_one_and_awaited_by_the_other, "both processes asking")
    assert sorted(source.calls) == ids  # each id called once, by one of the two
    source.gate.set()

    assert await through_a == [running(job_id) for job_id in ids]
    assert await through_b == [running(job_id) for job_id in reversed(ids)]
    assert sorted(source.calls) == ids
    waited = a.fetcher.stats().answered_elsewhere + b.fetcher.stats().answered_elsewhere
    called = a.fetcher.stats().upstream_calls + b.fetcher.stats().upstream_calls
    assert (waited, called) == (10, 10)

    async def no_claim_left() -> bool:  # the releases run in the background
        return [key async for key in client.scan_iter(match=f"{prefix}:fetching:*")] == []

    await eventually(no_claim_left, "every claim released")


async def test_a_holder_that_fails_lets_the_waiter_call_at_once(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    source = FakeSource()
    source.add(running("job-1"))
    source.fail("job-1", errors.UpstreamAuthFailed("denied, once"))
    source.gate = asyncio.Event()
    # Leases of a minute: a waiter that waited for the lease to end would never be answered
    # within the safety timeout; only the failed holder's release can let it go ahead.
    a = Gateway(client, prefix, source, lease=60.0)
    b = Gateway(client, prefix, source, lease=60.0)
    through_a = asyncio.create_task(a.get("job-1"))
    await eventually(lambda: source.calls == ["job-1"], "A's call")
    through_b = asyncio.create_task(b.get("job-1"))
    await eventually(lambda: b.fetcher.stats().claim_waits == 1, "B waiting for A's claim")
    assert source.calls == ["job-1"]
    source.gate.set()
    (failed,) = await through_a
    assert isinstance(failed, errors.UpstreamAuthFailed)  # errors are not shared
    assert await asyncio.wait_for(through_b, SAFETY_TIMEOUT) == [running("job-1")]
    assert source.calls == ["job-1", "job-1"]


async def test_a_holder_that_dies_lets_the_waiter_call_after_the_lease(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    source = FakeSource()
    source.add(running("job-1"))
    source.gate = asyncio.Event()
    dead = Process(client, prefix, lease=0.3)
    as_lease(await dead.claims.claim("job-1"))  # claimed, then the process went away
    b = Gateway(client, prefix, source)
    through_b = asyncio.create_task(b.get("job-1"))
    await eventually(lambda: source.calls == ["job-1"], "B's call")
    # B waited, then called under a claim of its own: the dead one had expired first.
    assert b.fetcher.stats().claim_waits == 1
    holder = await client.get(b.claims.key("job-1"))
    assert isinstance(holder, bytes)
    assert holder.startswith(f"{b.claims.token}:".encode())
    source.gate.set()
    assert await through_b == [running("job-1")]
    assert source.calls == ["job-1"]


async def test_a_waiter_stops_at_its_deadline(client: redis.asyncio.Redis, prefix: str) -> None:
    source = FakeSource()
    dead = Process(client, prefix, lease=60.0)
    as_lease(await dead.claims.claim("job-1"))
    b = Gateway(client, prefix, source)
    # Answered at all within the safety timeout: at the deadline, not at the lease's end.
    (result,) = await asyncio.wait_for(b.get("job-1", seconds=0.2), SAFETY_TIMEOUT)
    assert isinstance(result, errors.BudgetExhausted)
    assert b.fetcher.stats().claim_waits == 1
    assert source.calls == []


async def test_with_redis_down_each_process_fetches_at_once() -> None:
    unreachable = open_redis("redis://127.0.0.1:1/0", timeout=0.5)
    source = FakeSource()
    source.add(running("job-1"))
    try:
        # The fetcher's and the budget's clock stands still: any wait of theirs would hang.
        gateway = Gateway(unreachable, "unused", source, clock=ManualClock())
        with timers_fired() as waited:
            assert await asyncio.wait_for(gateway.get("job-1"), SAFETY_TIMEOUT) == [
                running("job-1")
            ]
    finally:
        await unreachable.aclose()
    assert waited == []  # no Redis timeout waited out, no backoff: at once
    assert source.calls == ["job-1"]
