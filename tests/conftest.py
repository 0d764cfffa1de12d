"""Fixtures every test folder may use: a real MPS simulator on a real port, a private Redis.

Hypothesis runs without its per-example deadline and its too-slow health check: both measure
wall-clock time, which a busy machine stretches (a test never asserts a duration).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from gateway.settings import SimulatorSettings
from gateway.shared.backend import RedisClient
from gateway.simulator import SIMULATOR_KEEP_ALIVE, create_simulator_app
from tests.servers import SimulatorServer, run_asgi_server
from tests.support.redis import SHARED_BACKENDS, RedisCluster, RedisServer, connect_backend

# Loaded here, before any test module is imported: a test's own `@settings(...)` starts from it.
settings.register_profile(
    "deterministic", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deterministic")


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(qps=100)


@pytest.fixture
def simulator(simulator_settings: SimulatorSettings) -> Iterator[SimulatorServer]:
    app = create_simulator_app(simulator_settings)
    with run_asgi_server(app, timeout_keep_alive=SIMULATOR_KEEP_ALIVE) as url:
        yield SimulatorServer(url=url, settings=simulator_settings)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server of the test's own, started, which it may kill, restart on the
    same port, pause and resume (see `tests.support.redis`)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private three-node Redis Cluster, started once for the whole session by the first test
    that asks for it (see `tests.support.redis.RedisCluster`); tests share it by key prefixes."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(params=SHARED_BACKENDS)
async def shared_redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisClient]:
    """A client of the shared backend the test runs on: the shared Redis, then the Redis
    Cluster (every test that takes it runs on both)."""
    client = await connect_backend(request, request.param)
    try:
        yield client
    finally:
        await client.aclose()
