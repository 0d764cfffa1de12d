"""The shared backend (Redis): how the gateway connects to it, and the one error it raises.

Shared implementations of the budget and of the snapshot cache translate their driver's
connection failures into this exception, at exactly one place each; `gateway.jobs.failover`
catches it and serves the call from a local fallback instead. A Redis budget raises a subclass
of it (say `BudgetBackendError`), so the failover needs no knowledge of that module.

Only "the backend did not answer" belongs here: a refused or dropped connection, a timeout, a
server that is loading or read-only. A bug (a wrong command, a script error) is not turned
into a failover: it stays a plain exception and surfaces as one.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, overload

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = [
    "REDIS_UNAVAILABLE",
    "BackendUnavailable",
    "RedisClient",
    "open_redis",
    "redis_unavailable",
]

#: A client of one Redis (or a primary), or of a Redis Cluster.
RedisClient: TypeAlias = "redis.asyncio.Redis | RedisCluster"

#: Seconds a pooled connection may sit idle before it is PINGed again before use.
HEALTH_CHECK_INTERVAL: Final = 10
#: Connections to Redis one process opens at most; more callers wait for one to free.
MAX_CONNECTIONS: Final = 64


class BackendUnavailable(Exception):
    """A shared backend did not answer in time, or refused to serve; try a local fallback.

    `backend` names it ("redis"), `reason` says what happened in words that hold no secret (a
    host and port at most, never a URL with its password).
    """

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"The {backend} backend is unavailable: {reason}.")
        self.backend = backend
        self.reason = reason


#: redis-py errors that mean "Redis does not serve us now", as opposed to a bug on our side.
#: ConnectionError covers refused and dropped connections, failed authentication, a server still
#: loading its data, and an exhausted pool; a replica promoted away answers READONLY, and a full
#: server OOM: both pass with time, like an outage.
REDIS_UNAVAILABLE: Final[tuple[type[redis.exceptions.RedisError], ...]] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    # A cluster that lost a shard, or is moving one: both pass, like an outage.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def redis_unavailable(exc: redis.exceptions.RedisError) -> BackendUnavailable:
    """The `BackendUnavailable` for a redis-py error from `REDIS_UNAVAILABLE`.

    redis-py's messages name the host and port ("Error 111 connecting to 10.0.0.5:6379.
    Connection refused."), never the password, so they are safe to keep.
    """
    return BackendUnavailable("redis", f"{type(exc).__name__}: {exc}".rstrip(". "))


@overload
def open_redis(
    url: str,
    *,
    timeout: float,
    max_connections: int = ...,
    cluster: Literal[False] = ...,
) -> redis.asyncio.Redis: ...


@overload
def open_redis(
    url: str, *, timeout: float, max_connections: int = ..., cluster: bool
) -> RedisClient: ...


def open_redis(
    url: str, *, timeout: float, max_connections: int = MAX_CONNECTIONS, cluster: bool = False
) -> RedisClient:
    """A client for the Redis at `url` that never stalls a request for long; with `cluster`,
    for the Redis Cluster (or Valkey cluster) that node belongs to.

    `timeout` bounds connecting, each answer, and the wait for a pooled connection (redis-py's
    default is 5 s, far too long for a call on the request path: a Redis that stops answering
    must cost a fallback, not a hang).

    The pool is a blocking one of `max_connections`: under load, callers wait (up to `timeout`)
    for a connection to free. redis-py's default pool instead raises `MaxConnectionsError` (a
    ConnectionError) the moment 100 commands are in flight, which would read as an outage and
    fail a busy process over while Redis is perfectly well.

    redis-py's default retries (10, with backoff) are replaced by one immediate retry on a
    connection error only: that heals a pooled connection that Redis or a proxy closed while it
    sat idle, and costs nothing when Redis is down (a refused connection fails at once); a
    timeout is never retried, which would double the stall. The caller closes the client
    (`await client.aclose()`), which closes its pool.

    A cluster client keeps a pool per node and follows the cluster's redirections; every command
    the gateway sends touches keys of one hash slot (its keys share a hash tag), or is split per
    slot (`mget_nonatomic`).
    """
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    return redis.asyncio.Redis.from_pool(pool)
