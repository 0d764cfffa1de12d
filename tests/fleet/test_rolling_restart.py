"""A rolling restart of a two-process fleet under load, one process at a time, as the README
tells an operator to do it: no client sees an error, and the account never sees a call over
its limit (the simulator counts calls per rolling second).

Each process is told to stop (SIGTERM) and drains: /readyz answers `stopping` (503) for
GATEWAY_SHUTDOWN_GRACE while the process still serves, the balancer stops sending it requests,
the requests under way finish, and the process exits; it is started again on its port, and
takes requests again once /readyz says `ready`. The grace here is long (a busy machine's slow
health check must not outlast it); once the balancer has nothing in flight on the process, a
second SIGTERM cuts the rest short, as an orchestrator's timeout would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from typing import Any

import httpx
import pytest

from gateway.settings import SimulatorSettings
from tests.fleet.balancer import Balancer
from tests.fleet.conftest import fleet
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.waiting import eventually

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

LIMIT = 20
CLIENTS = 6
IDS_PER_REQUEST = 4
JOBS = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"
#: Bounds of the load, so that it stops by itself whatever happens.
MAX_REQUESTS = 5000
#: Requests each process must answer after its restart, before the next one is restarted.
SERVED_AFTER_RESTART = 5


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=LIMIT)])
async def test_a_rolling_restart_under_load_fails_no_request_and_keeps_the_limit(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    with fleet(
        simulator,
        redis_server,
        2,
        GATEWAY_UPSTREAM_QPS=str(LIMIT),
        GATEWAY_SHUTDOWN_GRACE="60",
        GATEWAY_REQUEST_DEADLINE="60",
    ) as gateways:
        simulator.reset_stats()
        fresh_ids = (f"{n:032x}" for n in itertools.count(1))
        answers: list[httpx.Response] = []
        restarted = asyncio.Event()
        async with (
            httpx.AsyncClient(timeout=120) as http,
            Balancer(gateways, http) as balancer,
        ):

            async def client() -> None:
                while not restarted.is_set() and len(answers) < MAX_REQUESTS:
                    ids = [next(fresh_ids) for _ in range(IDS_PER_REQUEST)]
                    body = {"query": JOBS, "variables": {"ids": ids}}
                    answers.append(await balancer.post("/graphql", body))

            load = [asyncio.create_task(client()) for _ in range(CLIENTS)]
            try:
                for gateway in gateways:
                    await restart_under_load(gateway, balancer)
            finally:
                restarted.set()
                await asyncio.gather(*load)

    bodies: list[dict[str, Any]] = [answer.json() for answer in answers]
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    errors = [error for body in bodies for error in body.get("errors", [])]
    assert errors == []
    assert all(len(body["data"]["jobs"]) == IDS_PER_REQUEST for body in bodies)
    # Every process drained before it stopped: the balancer never met a closed port.
    assert balancer.refused == 0
    for gateway in gateways:
        assert balancer.statuses[gateway.name] == ["ready", "stopping", "down", "ready"], (
            balancer.statuses
        )
    stats = simulator.query_stats()
    assert stats["calls"] >= len(answers)  # each request asked for fresh ids: real calls
    assert stats["throttled"] == 0
    assert stats["peakWindow"] <= LIMIT


async def restart_under_load(gateway: GatewayProcess, balancer: Balancer) -> None:
    """Stop `gateway` as an orchestrator does, while the load goes on, and start it again."""
    await eventually(lambda: balancer.in_flight[gateway.name] > 0, f"{gateway.name} busy")
    answered_before = balancer.answered[gateway.name]
    os.kill(gateway.pid, signal.SIGTERM)
    await eventually(lambda: gateway.name not in balancer.ready, f"{gateway.name} drained")
    # Still running, still answering what it was sent before it said `stopping`.
    assert gateway.running
    await eventually(lambda: balancer.in_flight[gateway.name] == 0, f"{gateway.name} idle")
    assert balancer.answered[gateway.name] > answered_before
    os.kill(gateway.pid, signal.SIGTERM)  # the second cuts the grace short
    await eventually(lambda: not gateway.running, f"{gateway.name} exited")
    await asyncio.to_thread(gateway.restart)
    await eventually(lambda: gateway.name in balancer.ready, f"{gateway.name} ready again")
    served = balancer.answered[gateway.name]
    await eventually(
        lambda: balancer.answered[gateway.name] >= served + SERVED_AFTER_RESTART,
        f"{gateway.name} serving again",
    )
