"""Redis for tests: the shared server of the budget, cache and claims tests, and private ones.

The shared one (`REDIS_URL`, 127.0.0.1:6379) runs here and in CI (`.ci/run` starts it). Tests
share it by keeping their keys under a `unique_prefix()` of their own, deleted afterwards
(`delete_prefix`); none ever stops it or flushes it. When it does not answer, `connect` fails
the test (never skips it) and says how to start it.

`RedisServer` is a private redis-server process of one test, which the test may kill, restart
on the same port, pause and resume: outages the shared server must never see. It saves nothing
(`--save ""`, no append-only file), so it leaves no file behind and comes back empty.

`RedisCluster` is a private three-node Redis Cluster (no replicas), started once per session by
the `redis_cluster` fixture (tests/conftest.py) when a test asks for it: the shared budget, cache
and claims tests run on it as well as on one Redis (their `client` fixture is parametrized by
`backend`), so that every key a script or a pipeline touches is proven to share a hash slot.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import pytest
import redis.asyncio
import redis.exceptions

from gateway.shared.backend import RedisClient, open_redis
from tests.support.ports import HOST, candidate_port
from tests.support.processes import ServerProcess
from tests.support.waiting import wait_until

__all__ = [
    "CLIENT_TIMEOUT",
    "CLUSTER_NODES",
    "REDIS_URL",
    "SHARED_BACKENDS",
    "START_REDIS",
    "CountingRedis",
    "RedisCluster",
    "RedisServer",
    "connect",
    "connect_backend",
    "connect_cluster",
    "counting_client",
    "delete_prefix",
    "key_names",
    "private_redis",
    "scored_members",
    "server_seconds",
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


async def connect_cluster(url: str) -> RedisClient:
    """A cluster client (`open_redis(cluster=True)`, `CLIENT_TIMEOUT`) of the Redis Cluster
    that the node at `url` belongs to, which has answered a PING. Close it with `aclose()`."""
    client = open_redis(url, timeout=CLIENT_TIMEOUT, cluster=True)
    await client.ping()
    return client


#: The shared backends the budget, cache and claims tests run on: one Redis, and a Redis Cluster
#: (slow: its session fixture starts three servers). Parametrize a fixture with it and connect
#: with `connect_backend`.
SHARED_BACKENDS: Final = ("redis", pytest.param("cluster", marks=pytest.mark.slow))


async def connect_backend(request: pytest.FixtureRequest, backend: str) -> RedisClient:
    """A client of `backend` (of `SHARED_BACKENDS`): the shared Redis (`connect`), or the
    session's private Redis Cluster (the `redis_cluster` fixture, started on first use)."""
    if backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return await connect_cluster(cluster.url)
    return await connect()


def unique_prefix() -> str:
    """A key prefix no other test (or run) uses: `test-` and 12 random hex digits."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(client: RedisClient, prefix: str) -> None:
    """Delete every key under `prefix:` (on a cluster, one key at a time: each its own slot)."""
    for key in await key_names(client, f"{prefix}:*"):
        await client.delete(key)


async def scored_members(client: redis.asyncio.Redis, key: str) -> list[tuple[str, float]]:
    """Every member of the sorted set at `key` with its score, lowest first."""
    entries = cast(list[tuple[bytes, float]], await client.zrange(key, 0, -1, withscores=True))
    return [(_text(member), float(score)) for member, score in entries]


async def key_names(client: RedisClient, pattern: str) -> list[str]:
    """The names of the keys matching `pattern`, sorted; on a cluster, of every node (`KEYS`
    would ask one)."""
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

    def __init__(
        self, name: str = "redis-server", *, options: Callable[[int], list[str]] | None = None
    ) -> None:
        binary = _binary("redis-server")

        def command(port: int) -> list[str]:
            extra = options(port) if options is not None else []
            return [
                binary,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ]

        super().__init__(name, command, answers_ping)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (CI installs it: {START_REDIS}).")
    return path


#: Primaries of a `RedisCluster`: the fewest Redis Cluster accepts.
CLUSTER_NODES: Final = 3
#: Primaries only, and no question asked.
CREATE_OPTIONS: Final = ("--cluster-replicas", "0", "--cluster-yes")


class RedisCluster:
    """A private Redis Cluster of `CLUSTER_NODES` primaries and no replicas, each a
    `RedisServer` with `--cluster-enabled yes` on a free port (its cluster bus on another free
    port: port + 10000 may lie beyond 65535), joined by `redis-cli --cluster create`.

    `start()` returns once every node says `cluster_state:ok`; `url` is one node's URL, from
    which a cluster client discovers the others. `close()` stops every node and deletes their
    logs and cluster configuration files."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="test-redis-cluster-"))
        self._stack = ExitStack()
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for index in range(CLUSTER_NODES):
            node = RedisServer(f"redis-cluster-node-{index}", options=self._cluster_options)
            self._stack.enter_context(node)
            self.nodes.append(node)
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *addresses, *CREATE_OPTIONS],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in self.nodes:
            wait_until(
                lambda node=node: _cluster_ok(node.port),  # type: ignore[misc]
                f"the cluster node on port {node.port} saying cluster_state:ok",
                ignore=(OSError,),
            )

    def _cluster_options(self, port: int) -> list[str]:
        # A bus port taken meanwhile makes the node exit saying "Address already in use", and
        # the start is tried again on other ports, as for the client port.
        return [
            "--cluster-enabled", "yes",
            "--cluster-port", str(candidate_port()),
            "--cluster-config-file", str(self._directory / f"nodes-{port}.conf"),
            "--dir", str(self._directory),
        ]  # fmt: skip

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _cluster_ok(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1.0) as connection:
        connection.sendall(b"CLUSTER INFO\r\n")
        answer = b""
        while b"cluster_state:" not in answer or not answer.endswith(b"\r\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
        return b"cluster_state:ok" in answer


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
