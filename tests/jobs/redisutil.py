"""The real Redis of the budget tests (127.0.0.1:6379), and a private one a test can stop.

These tests never skip: Redis runs here and in CI (`.ci/run` starts it). When it does not
answer, they fail and say how to start it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio

from gateway.shared.backend import open_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = "redis-server --daemonize yes --port 6379 --save '' --appendonly no"


async def connect(url: str = REDIS_URL) -> redis.asyncio.Redis:
    """A client of the test Redis; fails the test (never skips it) when Redis does not answer."""
    client = open_redis(url, timeout=2.0)
    try:
        await client.ping()
    except (OSError, redis.exceptions.RedisError) as exc:
        await client.aclose()
        pytest.fail(
            f"The Redis budget tests need a Redis at {url}, which did not answer ({exc}). "
            f"Start one with: {START_REDIS}",
            pytrace=False,
        )
    return client


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(client: redis.asyncio.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server process of one test, which the test may pause (SIGSTOP: connections
    stay open, nothing answers) or kill."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=5)


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed (CI installs it: {START_REDIS}).")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    server = PrivateRedis(process, port)
    try:
        yield server
    finally:
        if process.poll() is None:
            server.stop()


async def wait_until_up(server: PrivateRedis, attempts: int = 100) -> None:
    for _ in range(attempts):
        client = open_redis(server.url, timeout=0.2)
        try:
            await client.ping()
        except (OSError, redis.exceptions.RedisError):
            await asyncio.sleep(0.02)
        else:
            return
        finally:
            await client.aclose()
    pytest.fail(f"The private redis-server on port {server.port} did not start.")


class CountingRedis(redis.asyncio.Redis):
    """A client that records the name of every command it sends: `commands`, in order (a
    script counts as EVALSHA, or EVAL). One entry is one round trip, as nothing pipelines."""

    commands: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        # redis-py leaves execute_command untyped.
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline whose execution counts as one entry: "PIPELINE <command> <command>..."."""
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted_execute(raise_on_error: bool = True) -> Any:
            names = " ".join(str(args[0]).upper() for args, _ in pipe.command_stack)
            self.commands.append(f"PIPELINE {names}")
            return await execute(raise_on_error)

        pipe.execute = counted_execute  # type: ignore[method-assign]
        return pipe


def counting_client(url: str = REDIS_URL, *, timeout: float = 2.0) -> CountingRedis:
    """A `CountingRedis` on the pool `open_redis` would make; close it with `aclose()`."""
    client = CountingRedis(connection_pool=open_redis(url, timeout=timeout).connection_pool)
    # Closing the client closes the pool, as for a client of `open_redis`.
    client.auto_close_connection_pool = True
    client.commands = []
    return client
