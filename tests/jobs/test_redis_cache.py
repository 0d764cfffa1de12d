"""RedisSnapshotCache on a real Redis (127.0.0.1:6379), each test under its own key prefix."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.jobs.cache import CacheEntry
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.model import Job, JobState
from gateway.mps.decode import decode_job
from gateway.settings import GatewaySettings
from gateway.shared.backend import BackendUnavailable, open_redis
from tests.support.redis import (
    CLIENT_TIMEOUT,
    REDIS_URL,
    counting_client,
    delete_prefix,
    ttl_given,
    unique_prefix,
)
from tests.support.waiting import eventually, timers_fired

REGION = "cn-shanghai"
FETCHED_AT = 1_764_096_232.383469


def upstream_job(job_id: str, state: str, *, fetched_at: float = FETCHED_AT) -> Job:
    """A snapshot decoded from an upstream body, as the client makes them (so `raw` is set)."""
    body = {
        "RequestId": f"request-{job_id}",
        "JobId": job_id,
        "State": state,
        "FunctionName": "ImageCartoonize",
        "Input": "oss://in-bucket/images/cat.jpg",  # bucket only: placed by the region
        "Output": "oss://out-bucket.oss-cn-shanghai.aliyuncs.com/out/{source}-{timestamp}.jpg",
        "JobParams": '{mode:"gif"}',
        "UserData": "null",
        "PipelineId": "pipeline-1",
        "NewUpstreamField": "kept",
    }
    if state in ("Success", "Fail"):
        data = json.dumps({"result": [{"file": "out/cat-cartoon.jpg"}]})
        body["Result"] = json.dumps({"Code": state, "Message": "done", "Data": data})
    job = decode_job(body, fetched_at=fetched_at, region=REGION)
    assert job is not None
    return job


@pytest.fixture
def client(shared_redis: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """One Redis, or a Redis Cluster: every test that takes it runs on both."""
    return shared_redis


@pytest.fixture
async def prefix(client: redis.asyncio.Redis) -> AsyncIterator[str]:
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(client, prefix)


def make_cache(
    client: redis.asyncio.Redis,
    prefix: str,
    *,
    terminal: float = 100.0,
    # Far longer than any test takes on a busy machine: nothing expires unless a test says so.
    running: float = 60.0,
    not_found: float = 90.0,
    memo: int = 0,
    clock: float | None = None,
) -> RedisSnapshotCache:
    return RedisSnapshotCache(
        client,
        terminal_ttl=terminal,
        running_ttl=running,
        not_found_ttl=not_found,
        prefix=prefix,
        region=REGION,
        memo_max_entries=memo,
        # The wall clock stands at the fetch unless a test says otherwise: running snapshots
        # are read against their fetchedAt (`running_expiry`).
        clock=lambda: FETCHED_AT if clock is None else clock,
    )


@pytest.mark.parametrize("state", ["Success", "Fail", "Queuing", "Analysing", "Paused"])
async def test_a_snapshot_in_any_state_comes_back_equal_to_another_process(
    client: redis.asyncio.Redis, prefix: str, state: str
) -> None:
    job = upstream_job("job-1", state)
    await make_cache(client, prefix).put("job-1", job)

    entry = await make_cache(client, prefix).get("job-1")  # another process: nothing in memory

    assert entry == CacheEntry(job)
    assert entry.job is not None
    assert entry.job.raw == job.raw  # `raw` is left out of Job equality
    assert entry.job.fetched_at == FETCHED_AT
    assert entry.job.state is JobState.parse(state)


async def test_not_found_comes_back_as_not_found(client: redis.asyncio.Redis, prefix: str) -> None:
    await make_cache(client, prefix).put("nobody", None)
    assert await make_cache(client, prefix).get("nobody") == CacheEntry(None)
    assert await make_cache(client, prefix).get("never-asked") is None


async def test_key_layout_and_value_format(client: redis.asyncio.Redis, prefix: str) -> None:
    cache = make_cache(client, prefix)
    job = upstream_job("job-1", "Success")
    await cache.put("job-1", job)
    await cache.put("nobody", None)

    assert cache.key("job-1") == f"{prefix}:job:{{job-1}}"
    stored = await client.get(f"{prefix}:job:{{job-1}}")
    assert stored is not None
    assert json.loads(stored) == {"v": 1, "fetchedAt": FETCHED_AT, "raw": dict(job.raw)}
    assert await client.get(f"{prefix}:job:{{nobody}}") == b'{"v":1,"notFound":true}'


# A running snapshot lives until its ttl's end rounded down to a whole second (the grid of
# `running_expiry`): fetched at ...232.383469, 60 s, so until ...292.0: 59,616.531 ms, rounded up.
@pytest.mark.parametrize(
    ("state", "ttl_ms"),
    [("Success", 100_000), ("Fail", 100_000), ("Queuing", 59_617), ("Analysing", 59_617),
     ("Paused", 59_617), (None, 90_000)],
)  # fmt: skip
async def test_redis_expires_each_snapshot_after_the_ttl_of_its_state(
    client: redis.asyncio.Redis, prefix: str, state: str | None, ttl_ms: int
) -> None:
    cache = make_cache(client, prefix)
    job = upstream_job("job-1", state) if state else None
    _, ttl = await ttl_given(client, cache.key("job-1"), cache.put("job-1", job))
    assert ttl_ms in ttl


async def test_a_ttl_of_zero_stores_nothing_and_drops_the_older_value(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    cache = make_cache(client, prefix, running=0.0, not_found=0.0)
    await cache.put("job-1", None)  # not stored at all
    assert await client.exists(cache.key("job-1")) == 0

    await make_cache(client, prefix).put("job-1", None)  # a process with another setting
    await cache.put("job-1", upstream_job("job-1", "Queuing"))
    assert await client.exists(cache.key("job-1")) == 0
    assert await cache.get("job-1") is None


async def test_a_running_snapshot_expires(prefix: str) -> None:
    counting = counting_client()
    try:
        cache = make_cache(counting, prefix, running=0.05)
        await cache.put("job-1", upstream_job("job-1", "Analysing"))
        assert counting.commands == ["SET"]  # stored, for 50 ms

        async def gone() -> bool:
            return await cache.get("job-1") is None

        await eventually(gone, "the running snapshot expiring")
    finally:
        await counting.aclose()


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"v": 2, "notFound": true}',
        b'{"v": "1", "notFound": true}',
        b'{"v": true, "notFound": true}',
        b'{"v": 0, "fetchedAt": 1.0, "raw": {"JobId": "job-1", "State": "Success"}}',
        b'{"v": 1, "fetchedAt": "yesterday", "raw": {"JobId": "job-1", "State": "Success"}}',
        b'{"v": 1, "fetchedAt": 1.0, "raw": ["JobId", "job-1"]}',
        b'{"v": 1, "fetchedAt": 1.0, "raw": {"JobId": "job-1", "State": 5}}',
        b'{"v": 1, "fetchedAt": 1.0, "raw": {"JobId": "job-1"}}',
        b'{"v": 1, "fetchedAt": 1.0, "raw": {"JobId": "job-2", "State": "Success"}}',
        b'{"v": 1, "fetchedAt": 1.0}',
    ],
)
async def test_a_value_of_another_version_or_shape_is_a_miss(
    client: redis.asyncio.Redis, prefix: str, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(client, prefix)
    await client.set(cache.key("job-1"), value)
    with caplog.at_level(logging.DEBUG, logger="gateway.jobs.redis_cache"):
        assert await cache.get("job-1") is None
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]
    assert "job-1" in caplog.records[0].getMessage()


async def test_terminal_snapshots_are_kept_in_memory_too(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    now = FETCHED_AT + 10
    cache = make_cache(client, prefix, terminal=100.0, memo=10, clock=now)
    done = upstream_job("done", "Success")
    running = upstream_job("running", "Analysing")
    await cache.put("done", done)
    await cache.put("running", running)
    await cache.put("nobody", None)
    await client.delete(cache.key("done"), cache.key("running"), cache.key("nobody"))

    # The terminal snapshot never changes: the process may serve it without asking Redis...
    assert await cache.get("done") == CacheEntry(done)
    # ...but running snapshots and "not found" come from Redis, where replicas update them.
    assert await cache.get("running") is None
    assert await cache.get("nobody") is None
    assert cache.memo_size == 1
    # The same memory answers the synchronous peek, and only for the final snapshot.
    assert [cache.peek_finished(i) for i in ("done", "running", "nobody")] == [done, None, None]


async def test_a_terminal_snapshot_read_from_redis_is_kept_in_memory(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    done = upstream_job("done", "Fail")
    await make_cache(client, prefix).put("done", done)
    reader = make_cache(client, prefix, memo=10, clock=FETCHED_AT + 1)
    assert await reader.get("done") == CacheEntry(done)
    await client.delete(reader.key("done"))
    assert await reader.get("done") == CacheEntry(done)


async def test_the_memory_copy_expires_with_the_shared_one(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    done = upstream_job("done", "Success")
    clock = [FETCHED_AT + 1]
    cache = RedisSnapshotCache(
        client,
        terminal_ttl=100.0,
        running_ttl=1.0,
        not_found_ttl=1.0,
        prefix=prefix,
        memo_max_entries=10,
        clock=lambda: clock[0],
    )
    await cache.put("done", done)
    await client.delete(cache.key("done"))
    clock[0] = FETCHED_AT + 99.9
    assert await cache.get("done") == CacheEntry(done)
    clock[0] = FETCHED_AT + 100.0  # fetchedAt + terminal ttl: gone from Redis, so from here
    assert await cache.get("done") is None
    assert cache.memo_size == 0


async def test_the_memory_keeps_the_most_recently_used(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    cache = make_cache(client, prefix, memo=2, clock=FETCHED_AT)
    for job_id in ("a", "b", "c"):
        await cache.put(job_id, upstream_job(job_id, "Success"))
    assert cache.memo_size == 2


async def test_a_newer_answer_replaces_the_memory_copy(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    # Not a state change the upstream makes, but a job can be deleted: the newer answer wins.
    cache = make_cache(client, prefix, memo=10, clock=FETCHED_AT)
    await cache.put("job-1", upstream_job("job-1", "Success"))
    await cache.put("job-1", None)
    assert await cache.get("job-1") == CacheEntry(None)
    assert cache.memo_size == 0


async def test_a_job_without_its_upstream_body_is_refused(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    job = upstream_job("job-1", "Success")
    bare = dataclasses.replace(job, raw={})
    with pytest.raises(ValueError, match=r"Job\.raw"):
        await make_cache(client, prefix).put("job-1", bare)


async def test_an_unreachable_redis_raises_backend_unavailable_at_once() -> None:
    unreachable = open_redis("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    cache = make_cache(unreachable, "unused", memo=10, clock=FETCHED_AT)
    try:
        with timers_fired() as waited:
            with pytest.raises(BackendUnavailable) as get_error:
                await cache.get("job-1")
            with pytest.raises(BackendUnavailable) as put_error:
                await cache.put("job-2", upstream_job("job-2", "Queuing"))
    finally:
        await unreachable.aclose()
    assert waited == []  # at once: no timeout waited out, no backoff before a retry
    for error in (get_error.value, put_error.value):
        assert error.backend == "redis"
        assert "127.0.0.1:1" in error.reason
        assert "hunter2" not in str(error)


async def test_the_memory_still_serves_while_redis_is_unreachable(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    done = upstream_job("done", "Success")
    unreachable = open_redis("redis://127.0.0.1:1/0", timeout=0.5)
    cache = make_cache(unreachable, prefix, memo=10, clock=FETCHED_AT)
    try:
        with pytest.raises(BackendUnavailable):
            await cache.put("done", done)
        assert await cache.get("done") == CacheEntry(done)
    finally:
        await unreachable.aclose()


async def test_from_settings_takes_prefix_region_and_ttls() -> None:
    prefix = f"blue-{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(
        redis_prefix=prefix,
        region_id=REGION,
        cache_terminal_ttl=700.0,
        cache_running_ttl=0.5,
        cache_not_found_ttl=2.0,
    )
    client = open_redis(REDIS_URL, timeout=CLIENT_TIMEOUT)
    try:
        cache = RedisSnapshotCache.from_settings(client, settings)
        assert cache.key("abc") == f"{prefix}:job:{{abc}}"
        put = cache.put("abc", upstream_job("abc", "Success"))
        _, ttl = await ttl_given(client, f"{prefix}:job:{{abc}}", put)
        assert 700_000 in ttl
        entry = await RedisSnapshotCache.from_settings(client, settings).get("abc")
        assert entry == CacheEntry(upstream_job("abc", "Success"))
    finally:
        await client.delete(f"{prefix}:job:{{abc}}")
        await client.aclose()


async def test_more_concurrent_lookups_than_connections_wait_their_turn(prefix: str) -> None:
    # redis-py's default pool raises MaxConnectionsError (a ConnectionError) when it runs out,
    # which would read as an outage and fail a busy process over; ours makes them wait.
    small = open_redis(REDIS_URL, timeout=CLIENT_TIMEOUT, max_connections=4)
    try:
        cache = make_cache(small, prefix)
        await cache.put("job-1", upstream_job("job-1", "Analysing"))
        entries = await asyncio.gather(*(cache.get("job-1") for _ in range(500)))
    finally:
        await small.aclose()
    assert entries == [CacheEntry(upstream_job("job-1", "Analysing"))] * 500


async def test_get_many_reads_every_id_in_one_mget_in_order(prefix: str) -> None:
    counting = counting_client()
    try:
        writer = make_cache(counting, prefix)
        busy, done = upstream_job("busy", "Analysing"), upstream_job("done", "Success")
        await writer.put("busy", busy)
        await writer.put("done", done)
        await writer.put("gone", None)
        await counting.set(writer.key("garbled"), b"garbage")
        reader = make_cache(counting, prefix)  # another process: nothing in memory
        counting.commands.clear()

        entries = await reader.get_many(["done", "never", "busy", "gone", "garbled", "busy"])

        assert counting.commands == ["MGET"]  # one round trip for the lot
        assert entries == [
            CacheEntry(done),
            None,
            CacheEntry(busy),
            CacheEntry(None),
            None,  # a value this version cannot read is a miss, as for `get`
            CacheEntry(busy),
        ]
    finally:
        await counting.aclose()


async def test_get_many_serves_final_snapshots_from_memory_and_reads_only_the_rest(
    prefix: str,
) -> None:
    counting = counting_client()
    try:
        cache = make_cache(counting, prefix, memo=10, clock=FETCHED_AT + 1)
        done, busy = upstream_job("done", "Fail"), upstream_job("busy", "Queuing")
        await cache.put("done", done)
        await cache.put("busy", busy)
        counting.commands.clear()

        assert await cache.get_many(["done", "done"]) == [CacheEntry(done)] * 2
        assert counting.commands == []  # all in memory: no round trip at all

        assert await cache.get_many(["busy", "done"]) == [CacheEntry(busy), CacheEntry(done)]
        assert counting.commands == ["MGET"]
        assert await cache.get_many([]) == []
        assert counting.commands == ["MGET"]
    finally:
        await counting.aclose()


async def test_a_final_snapshot_read_by_get_many_is_kept_in_memory(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    done = upstream_job("done", "Success")
    await make_cache(client, prefix).put("done", done)
    reader = make_cache(client, prefix, memo=10, clock=FETCHED_AT + 1)
    assert await reader.get_many(["done"]) == [CacheEntry(done)]
    assert reader.peek_finished("done") == done


async def test_get_many_on_an_unreachable_redis_raises_unless_memory_serves_all(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    done = upstream_job("done", "Success")
    unreachable = open_redis("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    cache = make_cache(unreachable, prefix, memo=10, clock=FETCHED_AT)
    try:
        with pytest.raises(BackendUnavailable):
            await cache.put("done", done)  # kept in memory all the same
        assert await cache.get_many(["done"]) == [CacheEntry(done)]
        with timers_fired() as waited, pytest.raises(BackendUnavailable) as error:
            await cache.get_many(["done", "other"])
    finally:
        await unreachable.aclose()
    assert waited == []  # at once
    assert "hunter2" not in str(error.value)


async def test_the_same_stored_bytes_are_decoded_once_and_new_ones_again(
    client: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def counting_decode(raw: dict[str, str], **options: Any) -> Job | None:
        decoded.append(raw["JobId"])
        return decode_job(raw, **options)

    monkeypatch.setattr("gateway.jobs.redis_cache.decode_job", counting_decode)
    writer, reader = make_cache(client, prefix), make_cache(client, prefix)
    first = upstream_job("busy", "Analysing")
    await writer.put("busy", first)
    for _ in range(3):
        assert await reader.get_many(["busy"]) == [CacheEntry(first)]
        assert await reader.get("busy") == CacheEntry(first)
    assert decoded == ["busy"]

    # A newer snapshot is other bytes: decoded, and served, at once.
    newer = upstream_job("busy", "Analysing", fetched_at=FETCHED_AT + 1)
    await writer.put("busy", newer)
    entry = await reader.get("busy")
    assert entry is not None
    assert entry.job is not None
    assert entry.job.fetched_at == FETCHED_AT + 1
    assert decoded == ["busy", "busy"]


async def test_decoded_values_are_bounded_and_can_be_turned_off(
    client: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def counting_decode(raw: dict[str, str], **options: Any) -> Job | None:
        decoded.append(raw["JobId"])
        return decode_job(raw, **options)

    monkeypatch.setattr("gateway.jobs.redis_cache.decode_job", counting_decode)
    writer = make_cache(client, prefix)
    for job_id in ("a", "b", "c"):
        await writer.put(job_id, upstream_job(job_id, "Queuing"))

    def reader(decoded_max_entries: int) -> RedisSnapshotCache:
        return RedisSnapshotCache(
            client,
            terminal_ttl=100.0,
            running_ttl=1.5,
            not_found_ttl=3.0,
            prefix=prefix,
            region=REGION,
            memo_max_entries=0,
            decoded_max_entries=decoded_max_entries,
        )

    two = reader(2)
    await two.get_many(["a", "b", "c"])  # "a" is dropped to keep 2
    await two.get_many(["b", "c", "a"])
    assert decoded == ["a", "b", "c", "a"]

    decoded.clear()
    off = reader(0)
    await off.get_many(["a"])
    await off.get_many(["a"])
    assert decoded == ["a", "a"]


async def test_a_running_snapshot_past_its_expiry_is_a_miss_while_redis_still_holds_it(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    # Redis counts a key's life from its SET, a little after the fetch; every reader counts
    # the snapshot's from its fetchedAt: ...232.38 + 60 s, rounded down to ...292.0.
    await make_cache(client, prefix, running=60.0).put("busy", upstream_job("busy", "Analysing"))
    expiry = float(math.floor(FETCHED_AT + 60.0))

    before = await make_cache(client, prefix, running=60.0, clock=expiry - 0.001).get("busy")
    after = await make_cache(client, prefix, running=60.0, clock=expiry).get("busy")

    assert before is not None
    assert after is None
    assert await client.exists(f"{prefix}:job:{{busy}}") == 1
