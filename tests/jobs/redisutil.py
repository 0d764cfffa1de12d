"""The names the budget tests import from here, now in `tests.support.redis`.

Kept only for `test_budget.py` and `test_redis_budget.py`, which are being rewritten; new tests
import `tests.support.redis`. Delete this module once neither imports it.
"""

from __future__ import annotations

import redis.exceptions

from gateway.shared.backend import open_redis
from tests.support.redis import (
    REDIS_URL,
    START_REDIS,
    CountingRedis,
    RedisServer,
    connect,
    counting_client,
    delete_prefix,
    private_redis,
    unique_prefix,
)
from tests.support.waiting import eventually

__all__ = [
    "REDIS_URL",
    "START_REDIS",
    "CountingRedis",
    "PrivateRedis",
    "connect",
    "counting_client",
    "delete_prefix",
    "private_redis",
    "unique_prefix",
    "wait_until_up",
]

#: The private server of `private_redis()`, under its former name.
PrivateRedis = RedisServer


async def wait_until_up(server: RedisServer) -> None:
    """Return once `server` answers a client's PING (`private_redis()` servers already do)."""

    async def answers() -> bool:
        client = open_redis(server.url, timeout=1.0)
        try:
            return bool(await client.ping())
        except (OSError, redis.exceptions.RedisError):
            return False
        finally:
            await client.aclose()

    await eventually(answers, f"the private redis-server on port {server.port} answering")
