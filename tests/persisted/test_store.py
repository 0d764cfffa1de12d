"""The stores of automatic persisted queries: memory bounded in bytes and time, the shared
Redis (its keys, their expiry, values that are not their hash's document), and the failover
between them when Redis does not answer."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.persisted import FailoverDocumentStore, LocalDocumentStore, RedisDocumentStore
from gateway.shared.backend import open_redis
from gateway.shared.switch import BackendSwitch
from tests.support.ports import candidate_port
from tests.support.redis import connect, delete_prefix, ttl_given, unique_prefix


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def document(n: int, size: int = 40) -> str:
    text = f'query Q{n} {{ job(id: "x") {{ id }} }}'
    return text + " " * (size - len(text))


async def test_memory_keeps_at_most_its_bytes_least_recently_used_going_first() -> None:
    store = LocalDocumentStore(max_bytes=100, ttl=60)
    first, second, third = document(1), document(2), document(3)
    await store.put(sha256(first), first)
    await store.put(sha256(second), second)
    assert await store.get(sha256(first)) == first  # now the most recently used
    await store.put(sha256(third), third)
    assert [await store.get(sha256(d)) for d in (first, second, third)] == [first, None, third]
    assert store.bytes == 80


async def test_memory_forgets_a_document_its_ttl_after_it_was_put() -> None:
    clock = Clock()
    store = LocalDocumentStore(max_bytes=1000, ttl=10, clock=clock)
    text = document(1)
    await store.put(sha256(text), text)
    clock.now = 9.9
    assert await store.get(sha256(text)) == text
    clock.now = 10.0
    assert await store.get(sha256(text)) is None


async def test_memory_never_keeps_a_document_larger_than_itself() -> None:
    store = LocalDocumentStore(max_bytes=30, ttl=60)
    text = document(1)
    await store.put(sha256(text), text)
    assert (await store.get(sha256(text)), store.bytes) == (None, 0)


@pytest.fixture
async def shared() -> AsyncIterator[tuple[redis.asyncio.Redis, str]]:
    client = await connect()
    prefix = unique_prefix()
    try:
        yield client, prefix
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


async def test_redis_keeps_each_document_under_its_hash_for_the_ttl(
    shared: tuple[redis.asyncio.Redis, str],
) -> None:
    client, prefix = shared
    store = RedisDocumentStore(client, prefix=prefix, ttl=30)
    text = document(1)
    key = f"{prefix}:apq:{{{sha256(text)}}}"
    assert store.key(sha256(text)) == key
    _, ttl = await ttl_given(client, key, store.put(sha256(text), text))
    assert 30_000 in ttl
    assert await client.get(key) == text.encode()
    assert await store.get(sha256(text)) == text
    assert await store.get(sha256("another")) is None


@pytest.mark.parametrize("value", [b"query Other { a }", b"\xff\xfe not utf-8"])
async def test_a_redis_value_that_is_not_its_hashs_document_is_a_miss(
    shared: tuple[redis.asyncio.Redis, str], value: bytes
) -> None:
    client, prefix = shared
    store = RedisDocumentStore(client, prefix=prefix, ttl=30)
    claimed = sha256(document(1))
    await client.set(store.key(claimed), value)
    assert await store.get(claimed) is None


async def test_the_fleet_store_copies_what_redis_holds_into_memory(
    shared: tuple[redis.asyncio.Redis, str],
) -> None:
    client, prefix = shared
    text = document(1)
    # Registered by another process: only Redis has it.
    await RedisDocumentStore(client, prefix=prefix, ttl=30).put(sha256(text), text)
    memory = LocalDocumentStore(max_bytes=1000, ttl=30)
    store = FailoverDocumentStore(
        RedisDocumentStore(client, prefix=prefix, ttl=30), memory, BackendSwitch()
    )
    assert await store.get(sha256(text)) == text
    assert await memory.get(sha256(text)) == text
    other = document(2)
    await store.put(sha256(other), other)
    assert (await memory.get(sha256(other)), await client.get(store_key(prefix, other))) == (
        other,
        other.encode(),
    )


def store_key(prefix: str, text: str) -> str:
    return f"{prefix}:apq:{{{sha256(text)}}}"


async def test_without_redis_the_fleet_store_serves_from_memory() -> None:
    # A port nothing listens on: Redis refuses at once.
    client = open_redis(f"redis://127.0.0.1:{candidate_port()}/0", timeout=1.0)
    switch = BackendSwitch()
    memory = LocalDocumentStore(max_bytes=1000, ttl=30)
    store = FailoverDocumentStore(RedisDocumentStore(client, prefix="x", ttl=30), memory, switch)
    try:
        text = document(1)
        assert await store.get(sha256(text)) is None
        assert switch.degraded
        await store.put(sha256(text), text)
        assert await store.get(sha256(text)) == text
    finally:
        await client.aclose()
