"""RedisFetchClaims on a real Redis (127.0.0.1:6379), each test under its own key prefix: first
the claims alone, then two fetchers standing for two processes that share the cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway import errors
from gateway.budget import LocalBudget
from gateway.jobs.cache import CacheEntry, LocalSnapshotCache
from gateway.jobs.claims import NO_LEASE, Held, Lease, RedisFetchClaims
from gateway.jobs.failover import FailoverCache, FailoverClaims
from gateway.jobs.fetcher import FetchResult, JobFetcher
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.model import Job
from gateway.mps.decode import decode_job
from gateway.settings import GatewaySettings
from gateway.shared.backend import BackendUnavailable, open_redis
from gateway.shared.switch import BackendSwitch

from .jobfakes import NO_RETRY, FakeSource
from .redisutil import connect, counting_client, delete_prefix, unique_prefix


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    client = await connect()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(client: redis.asyncio.Redis) -> AsyncIterator[str]:
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(client, prefix)


#: When the test snapshots were fetched: now, so that caches keep them; fixed, so they compare.
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
    ) -> None:
        self.cache = RedisSnapshotCache(
            client,
            terminal_ttl=60.0,
            running_ttl=5.0,
            not_found_ttl=5.0,
            prefix=prefix,
            memo_max_entries=0,
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
    held = await b.claims.claim("job-1")
    assert isinstance(held, Held)
    assert 0.1 < held.retry_in <= 0.2  # the lease's end comes before the next poll would
    await asyncio.sleep(held.retry_in + 0.02)
    as_lease(await b.claims.claim("job-1"))


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
    await asyncio.sleep(0.15)  # a's lease expired while its call went on
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


async def test_an_unreachable_redis_fails_a_claim_at_once_and_the_failover_goes_ahead() -> None:
    unreachable = open_redis("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    process = Process(unreachable, "unused")
    try:
        with pytest.raises(BackendUnavailable) as error:
            await process.claims.claim("job-1")
        claims = FailoverClaims(process.claims, BackendSwitch())
        assert await claims.claim("job-1") is NO_LEASE  # go ahead, no claim to release
    finally:
        await unreachable.aclose()
    assert "hunter2" not in str(error.value)
    assert claims.degraded


async def test_from_settings_leases_for_the_read_timeout_under_the_prefix() -> None:
    settings = GatewaySettings(redis_prefix="blue", read_timeout=7.5)
    client = open_redis("redis://127.0.0.1:6379/0", timeout=1.0)
    try:
        cache = RedisSnapshotCache.from_settings(client, settings)
        claims = RedisFetchClaims.from_settings(client, cache, settings)
    finally:
        await client.aclose()
    assert claims.key("abc") == "blue:fetching:{abc}"
    assert claims.lease == 7.5


# --- two processes' fetchers -------------------------------------------------------------------


class Gateway:
    """One process's fetcher over the shared Redis (as `Services.build` wires it)."""

    def __init__(
        self, client: redis.asyncio.Redis, prefix: str, source: FakeSource, *, lease: float = 2.0
    ) -> None:
        process = Process(client, prefix, lease=lease)
        self.claims = process.claims
        local = LocalSnapshotCache(
            terminal_ttl=60.0, running_ttl=5.0, not_found_ttl=5.0, max_entries=100
        )
        switch = BackendSwitch()
        self.fetcher = JobFetcher(
            source,
            LocalBudget(100, 1.0),
            FailoverCache(process.cache, local, switch),
            claims=FailoverClaims(process.claims, switch),
            retry=NO_RETRY,
        )

    async def get(self, *job_ids: str, seconds: float = 5.0) -> list[FetchResult]:
        return await self.fetcher.get_many(list(job_ids), time.monotonic() + seconds)


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
    await asyncio.sleep(0.1)
    assert sorted(source.calls) == ids  # each id called once, by one of the two
    source.gate.set()

    assert await through_a == [running(job_id) for job_id in ids]
    assert await through_b == [running(job_id) for job_id in reversed(ids)]
    assert sorted(source.calls) == ids
    waited = a.fetcher.stats().answered_elsewhere + b.fetcher.stats().answered_elsewhere
    called = a.fetcher.stats().upstream_calls + b.fetcher.stats().upstream_calls
    assert (waited, called) == (10, 10)
    await asyncio.sleep(0.05)  # the background releases
    assert [key async for key in client.scan_iter(match=f"{prefix}:fetching:*")] == []


async def test_a_holder_that_fails_lets_the_waiter_call_at_once(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    source = FakeSource()
    source.add(running("job-1"))
    source.fail("job-1", errors.UpstreamAuthFailed("denied, once"))
    source.gate = asyncio.Event()
    a, b = Gateway(client, prefix, source), Gateway(client, prefix, source)
    through_a = asyncio.create_task(a.get("job-1"))
    await asyncio.sleep(0.05)
    through_b = asyncio.create_task(b.get("job-1"))
    await asyncio.sleep(0.05)
    assert source.calls == ["job-1"]
    started = time.monotonic()
    source.gate.set()
    (failed,) = await through_a
    assert isinstance(failed, errors.UpstreamAuthFailed)  # errors are not shared
    assert await through_b == [running("job-1")]
    assert time.monotonic() - started < 0.5  # not the 2 s lease: the failed holder released
    assert source.calls == ["job-1", "job-1"]


async def test_a_holder_that_dies_lets_the_waiter_call_after_the_lease(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    source = FakeSource()
    source.add(running("job-1"))
    dead = Process(client, prefix, lease=0.3)
    as_lease(await dead.claims.claim("job-1"))  # claimed, then the process went away
    b = Gateway(client, prefix, source)
    started = time.monotonic()
    assert await b.get("job-1") == [running("job-1")]
    assert 0.2 < time.monotonic() - started < 1.0
    assert source.calls == ["job-1"]
    assert b.fetcher.stats().claim_waits == 1


async def test_a_waiter_stops_at_its_deadline(client: redis.asyncio.Redis, prefix: str) -> None:
    source = FakeSource()
    dead = Process(client, prefix, lease=5.0)
    as_lease(await dead.claims.claim("job-1"))
    b = Gateway(client, prefix, source)
    started = time.monotonic()
    (result,) = await b.get("job-1", seconds=0.2)
    assert isinstance(result, errors.BudgetExhausted)
    assert time.monotonic() - started < 0.5
    assert source.calls == []


async def test_with_redis_down_each_process_fetches_at_once() -> None:
    unreachable = open_redis("redis://127.0.0.1:1/0", timeout=0.5)
    source = FakeSource()
    source.add(running("job-1"))
    try:
        gateway = Gateway(unreachable, "unused", source)
        started = time.monotonic()
        assert await gateway.get("job-1") == [running("job-1")]
        assert time.monotonic() - started < 1.0
    finally:
        await unreachable.aclose()
    assert source.calls == ["job-1"]
