"""Redis for tests: the shared server of the budget, cache and claims tests, and private ones.

The shared one (`REDIS_URL`, 127.0.0.1:6379) runs here and in CI (`.ci/run` starts it). Tests
share it by keeping their keys under a `unique_prefix()` of their own, deleted afterwards
(`delete_prefix`); none ever stops it or flushes it. When it does not answer, `connect` fails
the test (never skips it) and says how to start it.

`RedisServer` is a private redis-server process of one test, which the test may kill, restart
on the same port, pause and resume: outages the shared server must never see. It saves nothing
(`--save ""`, no append-only file), so it leaves no file behind and comes back empty.
"""

from __future__ import annotations

import math
import shutil
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar, cast

import pytest
import redis.asyncio
import redis.exceptions

from gateway.shared.backend import open_redis
from tests.support.ports import HOST
from tests.support.processes import ServerProcess

__all__ = [
    "CLIENT_TIMEOUT",
    "REDIS_URL",
    "START_REDIS",
    "CountingRedis",
    "RedisServer",
    "connect",
    "counting_client",
    "delete_prefix",
    "private_redis",
    "ttl_given",
    "unique_prefix",
]

REDIS_URL: Final = "redis://127.0.0.1:6379/0"
START_REDIS: Final = "redis-server --daemonize yes --port 6379 --save '' --appendonly no"
#: Seconds a test's client (or a test's gateway) waits for a Redis that is up: a busy machine's
#: slow answer must not pass for an outage. Tests of outages use a refused port, or a paused
#: private server and a short timeout of their own.
CLIENT_TIMEOUT: Final = 10.0

T = TypeVar("T")


async def connect(url: str = REDIS_URL) -> redis.asyncio.Redis:
    """A client of the Redis at `url` (`open_redis`, `CLIENT_TIMEOUT`) that has answered a
    PING; fails the test (never skips it) when Redis does not answer. Close it with
    `aclose()`."""
    client = open_redis(url, timeout=CLIENT_TIMEOUT)
    try:
        await client.ping()
    except (OSError, redis.exceptions.RedisError) as exc:
        await client.aclose()
        pytest.fail(
            f"These tests need a Redis at {url}, which did not answer ({exc}). "
            f"Start one with: {START_REDIS}",
            pytrace=False,
        )
    return client


def unique_prefix() -> str:
    """A key prefix no other test (or run) uses: `test-` and 12 random hex digits."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(client: redis.asyncio.Redis, prefix: str) -> None:
    """Delete every key under `prefix:`."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def scored_members(client: redis.asyncio.Redis, key: str) -> list[tuple[str, float]]:
    """Every member of the sorted set at `key` with its score, lowest first."""
    entries = cast(list[tuple[bytes, float]], await client.zrange(key, 0, -1, withscores=True))
    return [(_text(member), float(score)) for member, score in entries]


async def key_names(client: redis.asyncio.Redis, pattern: str) -> list[str]:
    """The names of the keys matching `pattern`, sorted."""
    names = [_text(key) async for key in client.scan_iter(match=pattern)]
    return sorted(names)


async def server_seconds(client: redis.asyncio.Redis) -> float:
    """The Redis server's clock, in Unix seconds."""
    seconds, microseconds = tuple(await client.time())
    return float(seconds) + float(microseconds) / 1e6


def _text(value: object) -> str:
    assert isinstance(value, bytes | str), value
    return value.decode() if isinstance(value, bytes) else value


async def ttl_given(client: redis.asyncio.Redis, key: str, write: Awaitable[T]) -> tuple[T, range]:
    """Await `write`, which sets `key` with an expiry; return what it returned, and the range of
    milliseconds the time to live it gave the key lies in, however long each step took.

    The Redis server's clock is read before the write and after reading the key's PTTL: the
    time that passed between the write and that read is at most the difference. A key that is
    gone (PTTL -2) or has no expiry (-1) gives a range that starts below 0.
    """
    before = await _server_ms(client, math.floor)
    result = await write
    left = int(await client.pttl(key))
    after = await _server_ms(client, math.ceil)
    return result, range(left, left + (after - before) + 1)


async def _server_ms(client: redis.asyncio.Redis, rounding: Callable[[float], int]) -> int:
    seconds, microseconds = await client.time()
    return int(seconds) * 1000 + rounding(int(microseconds) / 1000)


class CountingRedis(redis.asyncio.Redis):
    """A client that records every round trip it makes: `commands`, in order: a command's name
    (a script counts as EVALSHA, or EVAL), or "PIPELINE <name> <name>..." for a pipeline."""

    commands: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        # redis-py leaves execute_command untyped.
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline whose execution counts as one round trip."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted_execute(raise_on_error: bool = True) -> Any:
            names = " ".join(str(args[0]).upper() for args, _ in pipe.command_stack)
            self.commands.append(f"PIPELINE {names}")
            return await execute(raise_on_error)

        pipe.execute = counted_execute  # type: ignore[method-assign]
        return pipe


def counting_client(url: str = REDIS_URL, *, timeout: float = CLIENT_TIMEOUT) -> CountingRedis:
    """A `CountingRedis` on the pool `open_redis` would make; close it with `aclose()`."""
    client = CountingRedis(connection_pool=open_redis(url, timeout=timeout).connection_pool)
    # Closing the client closes the pool, as for a client of `open_redis`.
    client.auto_close_connection_pool = True
    client.commands = []
    return client


class RedisServer(ServerProcess):
    """A private redis-server on a free loopback port (see `ServerProcess` for `start`,
    `kill`, `restart`, `pause`, `resume`, `stop`); `url` is where it answers.

    Fails the test when redis-server is not installed (CI installs it)."""

    def __init__(self, name: str = "redis-server") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(f"redis-server is not installed (CI installs it: {START_REDIS}).")

        def command(port: int) -> list[str]:
            return [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]

        super().__init__(name, command, answers_ping)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped (and its log deleted) when the block ends."""
    with RedisServer() as server:
        yield server


def answers_ping(port: int) -> bool:
    """Whether a Redis on `port` of 127.0.0.1 answers PING with PONG now (not LOADING, not an
    error). Spoken in raw RESP, so that the probe needs no client and no event loop."""
    with socket.create_connection((HOST, port), timeout=1.0) as connection:
        connection.sendall(b"PING\r\n")
        return connection.recv(64).startswith(b"+PONG")
