"""A Redis killed and restarted again and again under load: the account never sees more than its
limit, through every transition.

Two gateway processes share a budget of 50 calls/s through Redis (25 each while it is down).
Clients keep both saturated with ids nobody asked for before (every id is an upstream call),
while the test kills Redis with SIGKILL and starts it again (empty) at random moments. The
simulator stands for the account: it throttles any call beyond 50 in a rolling second, and
counts the most calls it saw in any rolling second.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import httpx
import pytest

from gateway.settings import SimulatorSettings
from tests.fleet.conftest import fleet
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer

LIMIT = 50
JOBS = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = pytest.mark.xdist_group("fleet")


class Load:
    """Clients asking the gateways for fresh ids, round-robin, until stopped; every answer is
    kept (the HTTP status and the error codes) to check that nothing a client saw was a bug."""

    def __init__(self, gateways: list[GatewayProcess], clients: int) -> None:
        self.gateways = gateways
        self.clients = clients
        self.numbers = itertools.count(1)
        self.statuses: list[int] = []
        self.codes: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        gateway = self.gateways[n % len(self.gateways)]
        while not self._stop.is_set():
            ids = [f"{next(self.numbers):032x}" for _ in range(5)]
            response = await http.post(
                gateway.graphql_url, json={"query": JOBS, "variables": {"ids": ids}}
            )
            self.statuses.append(response.status_code)
            body: dict[str, Any] = response.json()
            self.codes += [error["extensions"]["code"] for error in body.get("errors", [])]


@pytest.mark.slow
@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=LIMIT)])
async def test_the_limit_holds_through_twenty_redis_transitions_under_load(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    rng = random.Random(20140618)
    with fleet(
        simulator,
        redis_server,
        2,
        GATEWAY_UPSTREAM_QPS=str(LIMIT),
        GATEWAY_REQUEST_DEADLINE="3",
        GATEWAY_MAX_RETRIES="0",
    ) as gateways:
        simulator.reset_stats()
        load = Load(gateways, clients=24)
        running = asyncio.ensure_future(load.run())
        transitions = 0
        try:
            await asyncio.sleep(1.0)  # the fleet at full rate through Redis
            for _ in range(10):
                redis_server.kill()  # SIGKILL: everything Redis held is gone
                transitions += 1
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                redis_server.restart()  # on its port, empty
                transitions += 1
                await asyncio.sleep(rng.uniform(0.3, 2.5))
        finally:
            load.stop()
            await asyncio.wait_for(running, timeout=60)
        await asyncio.sleep(2.0)  # every process back on Redis (a probe a second at most)
        recovered = [gateway.readyz()["status"] for gateway in gateways]

    stats = simulator.query_stats()
    assert transitions >= 20
    assert stats["calls"] > 10 * LIMIT, "too little load went through: the test proves nothing"
    # The account's view: never more than its limit in any rolling second, nothing throttled.
    assert stats["throttled"] == 0, stats
    assert stats["peakWindow"] <= LIMIT, stats
    # The clients' view: answers, or errors that say to come back later; never a bug.
    assert set(load.statuses) == {200}
    assert set(load.codes) <= {"BUDGET_EXHAUSTED", "DEADLINE_EXCEEDED"}, set(load.codes)
    assert recovered == ["ready", "ready"]
