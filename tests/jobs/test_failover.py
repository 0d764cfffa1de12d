"""FailoverCache and FailoverClaims, and the switch they follow: on plain fakes with a
hand-moved clock, then on a real redis-server that the test stops and starts again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import redis.asyncio

from gateway.jobs.cache import CacheEntry, LocalSnapshotCache
from gateway.jobs.claims import NO_LEASE, Held, Lease
from gateway.jobs.failover import FailoverCache, FailoverClaims
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.model import Job
from gateway.mps.decode import decode_job
from gateway.shared.backend import BackendUnavailable, open_redis
from gateway.shared.switch import BackendSwitch, SwitchStatus
from tests.support.redis import RedisServer, private_redis

LOGGER = "gateway.shared.switch"
#: When the test snapshots were fetched: now, so that caches keep them; fixed, so they compare.
FETCHED_AT = time.time()


class Clock:
    """Moves only when told to, or when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay
        await asyncio.sleep(0)


LOCAL = "serving from this process"
SHARED = "serving from Redis"


def switch(clock: Clock) -> BackendSwitch:
    return BackendSwitch(probe_interval=1.0, clock=clock, local_mode=LOCAL, shared_mode=SHARED)


def outage() -> BackendUnavailable:
    return BackendUnavailable("redis", "ConnectionError: Error 111 connecting to 10.0.0.5:6379")


def job(job_id: str, state: str = "Success") -> Job:
    decoded = decode_job({"JobId": job_id, "State": state}, fetched_at=FETCHED_AT)
    assert decoded is not None
    return decoded


class FakeCache:
    """A dict; raises BackendUnavailable while `down`; `gate`, when set, holds every call."""

    def __init__(self) -> None:
        self.entries: dict[str, Job | None] = {}
        self.down = False
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def get(self, job_id: str) -> CacheEntry | None:
        await self._enter(f"get {job_id}")
        return CacheEntry(self.entries[job_id]) if job_id in self.entries else None

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        await self._enter(f"get_many {','.join(job_ids)}")
        return [
            CacheEntry(self.entries[job_id]) if job_id in self.entries else None
            for job_id in job_ids
        ]

    async def put(self, job_id: str, job: Job | None) -> None:
        await self._enter(f"put {job_id}")
        self.entries[job_id] = job

    def peek_finished(self, job_id: str) -> Job | None:
        return None  # nothing in process memory: every read is a call

    async def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise outage()


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


# --- the cache ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def caches(clock: Clock) -> tuple[FakeCache, FakeCache, FailoverCache]:
    primary, fallback = FakeCache(), FakeCache()
    return primary, fallback, FailoverCache(primary, fallback, switch(clock))


async def test_a_healthy_primary_serves_alone(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
) -> None:
    primary, fallback, cache = caches
    await cache.put("a", job("a"))
    assert await cache.get("a") == CacheEntry(job("a"))
    assert primary.calls == ["put a", "get a"]
    assert fallback.calls == []
    assert not cache.degraded


async def test_the_fallback_serves_at_once_when_the_primary_is_down_and_it_is_said_once(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, fallback, cache = caches
    primary.down = True

    await cache.put("a", job("a"))  # fails on the primary, lands in the fallback
    assert cache.degraded
    assert await cache.get("a") == CacheEntry(job("a"))
    clock.now += 0.9
    assert await cache.get("b") is None

    assert primary.calls == ["put a"]  # not asked again within the probe interval
    assert fallback.calls == ["put a", "get a", "get b"]
    assert warnings_logged(caplog) == [
        f"Redis unreachable (ConnectionError: Error 111 connecting to 10.0.0.5:6379): {LOCAL}"
    ]
    assert cache.status() == SwitchStatus(
        degraded=True,
        degraded_for=clock.now - 100.0,
        failovers=1,
        last_error="ConnectionError: Error 111 connecting to 10.0.0.5:6379",
    )


async def test_the_primary_is_probed_once_per_interval_and_serves_again_when_it_answers(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, fallback, cache = caches
    primary.down = True
    assert await cache.get("a") is None
    primary.calls.clear()

    clock.now += 1.0
    assert await cache.get("b") is None  # the probe: still down, so the fallback answers
    assert await cache.get("c") is None  # no second probe in the same interval
    assert primary.calls == ["get b"]
    assert fallback.calls == ["get a", "get b", "get c"]

    primary.down = False
    primary.entries["d"] = job("d")
    clock.now += 0.5
    assert await cache.get("d") is None  # the next probe waits a whole interval
    clock.now += 0.5
    assert await cache.get("d") == CacheEntry(job("d"))  # probe succeeds: primary again
    assert not cache.degraded
    await cache.put("e", None)
    assert primary.calls == ["get b", "get d", "put e"]

    assert [message.split(" (")[0] for message in warnings_logged(caplog)] == [
        "Redis unreachable",
        f"Redis reachable again: {SHARED}",
    ]
    assert cache.status().failovers == 1
    assert not cache.status().degraded


async def test_while_a_probe_is_under_way_the_others_use_the_fallback(
    caches: tuple[FakeCache, FakeCache, FailoverCache], clock: Clock
) -> None:
    primary, fallback, cache = caches
    primary.down = True
    await cache.get("a")
    clock.now += 1.0
    primary.gate = asyncio.Event()  # Redis hangs until its timeout
    probe = asyncio.create_task(cache.get("probe"))
    await asyncio.sleep(0)
    assert await cache.get("other") is None  # not queued behind the hanging probe
    assert fallback.calls == ["get a", "get other"]
    primary.gate.set()
    assert await probe is None
    assert fallback.calls == ["get a", "get other", "get probe"]


async def test_a_call_from_before_the_outage_does_not_end_it(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
) -> None:
    primary, _, cache = caches
    gate = primary.gate = asyncio.Event()
    slow = asyncio.create_task(cache.get("slow"))  # asked while healthy; Redis is slow
    await asyncio.sleep(0)
    primary.gate, primary.down = None, True
    await cache.get("a")  # fails: degraded
    primary.down = False
    gate.set()
    # `slow` succeeds on the primary, but it was asked before the outage: that proves nothing
    # about now, so only a probe may end the outage.
    assert await slow is None
    assert cache.degraded
    assert primary.calls == ["get slow", "get a"]


async def test_a_cancelled_probe_leaves_the_next_to_the_next_interval(
    caches: tuple[FakeCache, FakeCache, FailoverCache], clock: Clock
) -> None:
    primary, _, cache = caches
    primary.down = True
    await cache.get("a")
    clock.now += 1.0
    primary.gate = asyncio.Event()
    probe = asyncio.create_task(cache.get("probe"))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    primary.gate = None
    primary.down = False
    assert await cache.get("b") is None  # within the interval: the fallback answers
    assert cache.degraded
    clock.now += 1.0
    await cache.get("c")
    assert not cache.degraded


async def test_other_primary_errors_are_bugs_not_outages(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
) -> None:
    primary, fallback, cache = caches

    async def broken(job_id: str) -> CacheEntry | None:
        raise KeyError(job_id)

    primary.get = broken  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        await cache.get("a")
    assert not cache.degraded
    assert fallback.calls == []


async def test_get_many_follows_the_same_rules_as_get_with_one_call_per_batch(
    caches: tuple[FakeCache, FakeCache, FailoverCache], clock: Clock
) -> None:
    primary, fallback, cache = caches
    primary.entries["a"] = job("a")
    assert await cache.get_many(["a", "b"]) == [CacheEntry(job("a")), None]
    assert primary.calls == ["get_many a,b"]

    primary.down = True
    fallback.entries["b"] = None
    # The whole batch fails over at once, and the fallback answers it without an error.
    assert await cache.get_many(["a", "b"]) == [None, CacheEntry(None)]
    assert cache.degraded
    assert await cache.get_many(["c"]) == [None]  # within the probe interval: fallback only
    assert primary.calls == ["get_many a,b", "get_many a,b"]
    assert fallback.calls == ["get_many a,b", "get_many c"]

    primary.down = False
    clock.now += 1.0
    assert await cache.get_many(["a"]) == [CacheEntry(job("a"))]  # the probe: primary again
    assert not cache.degraded


async def test_get_many_s_other_errors_are_bugs_not_outages(
    caches: tuple[FakeCache, FakeCache, FailoverCache],
) -> None:
    primary, fallback, cache = caches

    async def broken(job_ids: Sequence[str]) -> list[CacheEntry | None]:
        raise KeyError(job_ids[0])

    primary.get_many = broken  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        await cache.get_many(["a"])
    assert not cache.degraded
    assert fallback.calls == []


# --- the claims --------------------------------------------------------------------------------


class FakeLease:
    def __init__(self, claims: FakeClaims) -> None:
        self.claims = claims

    async def release(self) -> None:
        if self.claims.down:
            raise outage()
        self.claims.released += 1


class FakeClaims:
    """Answers `answer` (a lease by default); raises BackendUnavailable while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.asked: list[str] = []
        self.released = 0
        self.answer: CacheEntry | Held | None = None

    async def claim(self, job_id: str, *, attempt: int = 0) -> Lease | CacheEntry | Held:
        self.asked.append(job_id)
        if self.down:
            raise outage()
        return FakeLease(self) if self.answer is None else self.answer


async def test_claims_pass_through_while_the_primary_answers(clock: Clock) -> None:
    primary = FakeClaims()
    claims = FailoverClaims(primary, switch(clock))
    lease = await claims.claim("a")
    assert not isinstance(lease, CacheEntry | Held)
    await lease.release()
    assert primary.released == 1
    primary.answer = Held(retry_in=0.025)
    assert await claims.claim("a") == Held(retry_in=0.025)
    primary.answer = CacheEntry(None)
    assert await claims.claim("a") == CacheEntry(None)
    assert not claims.degraded


async def test_without_the_primary_a_fetch_claims_nothing_and_goes_ahead_at_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    primary = FakeClaims()
    claims = FailoverClaims(primary, switch(clock))
    primary.down = True
    assert await claims.claim("a") is NO_LEASE
    assert await claims.claim("b") is NO_LEASE  # not asked: within the probe interval
    assert primary.asked == ["a"]
    assert claims.degraded
    assert claims.status().failovers == 1

    primary.down = False
    clock.now += 1.0
    lease = await claims.claim("c")  # the probe
    assert lease is not NO_LEASE
    assert not claims.degraded
    assert [message.split(" (")[0] for message in warnings_logged(caplog)] == [
        "Redis unreachable",
        f"Redis reachable again: {SHARED}",
    ]


async def test_a_release_that_cannot_reach_the_primary_fails_it_over(clock: Clock) -> None:
    primary = FakeClaims()
    claims = FailoverClaims(primary, switch(clock))
    lease = await claims.claim("a")
    assert not isinstance(lease, CacheEntry | Held)
    primary.down = True
    with pytest.raises(BackendUnavailable):
        await lease.release()  # the fetcher logs it; the claim expires on its own
    assert claims.degraded
    assert await claims.claim("b") is NO_LEASE


async def test_a_health_check_brings_the_claims_back_too(clock: Clock) -> None:
    primary = FakeClaims()
    claims = FailoverClaims(primary, switch(clock))
    primary.down = True
    await claims.claim("a")
    primary.down = False
    clock.now += 1.0
    claims.switch.answered()
    assert not claims.degraded
    assert primary.asked == ["a"]


# --- a real Redis that goes away and comes back ------------------------------------------------


@pytest.fixture
def redis_process() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture
async def redis_client(redis_process: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = open_redis(redis_process.url, timeout=0.5)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_real_redis_that_stops_and_comes_back(
    redis_process: RedisServer,
    redis_client: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = RedisSnapshotCache(
        redis_client,
        terminal_ttl=60.0,
        running_ttl=60.0,
        not_found_ttl=60.0,
        prefix="test",
        memo_max_entries=0,
        clock=lambda: FETCHED_AT,  # however late in a long run: the running snapshots are fresh
    )
    local = LocalSnapshotCache(
        terminal_ttl=60.0, running_ttl=60.0, not_found_ttl=60.0, max_entries=10
    )
    cache = FailoverCache(
        shared, local, BackendSwitch(probe_interval=0.2, local_mode=LOCAL, shared_mode=SHARED)
    )

    await cache.put("before", job("before", "Analysing"))
    assert await redis_client.exists("test:job:{before}") == 1

    redis_process.kill()
    assert await cache.get("before") is None  # Redis is gone: the local cache never had it
    await cache.put("during", job("during", "Analysing"))
    assert await cache.get("during") == CacheEntry(job("during", "Analysing"))
    assert cache.degraded
    assert "127.0.0.1:" in (cache.status().last_error or "")

    redis_process.restart()  # empty again: --save "" keeps nothing
    await asyncio.sleep(0.25)
    assert await cache.get("during") is None  # the probe reached Redis, which has no such key
    assert not cache.degraded
    await cache.put("after", None)
    assert await redis_client.get("test:job:{after}") == b'{"v":1,"notFound":true}'
    assert [message.split(" (")[0] for message in warnings_logged(caplog)] == [
        "Redis unreachable",
        f"Redis reachable again: {SHARED}",
    ]
