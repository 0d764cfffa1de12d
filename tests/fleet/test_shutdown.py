"""SIGTERM with requests waiting for the budget: they are answered at once, the process exits,
and it leaves nothing held in Redis for the rest of the fleet."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import pytest
import redis.asyncio

from tests.fleet.conftest import fleet
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer, scored_members
from tests.support.waiting import eventually

JOBS = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = pytest.mark.xdist_group("fleet")


@pytest.mark.slow
async def test_sigterm_answers_the_waiting_requests_and_releases_everything(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    prefix = "shutdown-test"
    # One call a second and a deadline of a minute: without the shutdown rule, the waiting
    # requests would hold the process for up to a minute.
    with fleet(
        simulator,
        redis_server,
        1,
        GATEWAY_UPSTREAM_QPS="1",
        GATEWAY_REQUEST_DEADLINE="60",
        GATEWAY_REDIS_PREFIX=prefix,
    ) as (gateway,):
        async with httpx.AsyncClient(timeout=120) as http:

            async def ask(n: int) -> dict[str, Any]:
                response = await http.post(
                    gateway.graphql_url,
                    json={"query": JOBS, "variables": {"ids": [f"{n:032x}"]}},
                )
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            waiting = [asyncio.ensure_future(ask(n)) for n in range(1, 9)]
            # Every request has reached the budget: one granted, the others queued.
            await eventually(
                lambda: gateway.readyz()["budget"]["waiting"] == 7,
                "every request reaching the budget",
            )
            os.kill(gateway.pid, signal.SIGTERM)
            bodies = await asyncio.gather(*waiting)
            await eventually(lambda: not gateway.running, "the gateway's exit")

    codes = sorted(
        error["extensions"]["code"] for body in bodies for error in body.get("errors", [])
    )
    assert codes == ["SHUTTING_DOWN"] * 7
    assert all(
        error["extensions"]["retryAfter"] > 0 for body in bodies for error in body.get("errors", [])
    )
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        seconds, micros = await client.time()
        now = seconds + micros / 1e6
        # No claim left for the other processes to wait out...
        assert [key async for key in client.scan_iter(match=f"{prefix}:fetching:*")] == []
        # ...and no slot held by a call in flight (whose lease would block the fleet): at most
        # the one call made, for one window after it completed.
        slots = await scored_members(client, f"{prefix}:budget:{{QueryIProductionJob}}:slots")
        assert len(slots) <= 1
        assert all(expiry / 1e6 <= now + 1.01 for _, expiry in slots), (slots, now)
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_grace_drains_then_ends_by_itself() -> None:
    variables = {"GATEWAY_SHUTDOWN_GRACE": "1", "GATEWAY_LOG_LEVEL": "INFO"}
    with GatewayProcess(variables) as gateway:
        os.kill(gateway.pid, signal.SIGTERM)
        # No second signal: the grace ends, then the process stops on its own.
        await eventually(lambda: not gateway.running, "the gateway's exit after its grace")
        output = gateway.output()
    assert "SIGTERM: draining for 1 s (GATEWAY_SHUTDOWN_GRACE) before stopping" in output
    assert output.index("draining") < output.index("Shutting down")


@pytest.mark.slow
async def test_while_draining_it_says_stopping_and_still_serves() -> None:
    with GatewayProcess({"GATEWAY_SHUTDOWN_GRACE": "120"}) as gateway:
        async with httpx.AsyncClient(timeout=30) as http:
            os.kill(gateway.pid, signal.SIGTERM)

            async def stopping() -> bool:
                response = await http.get(f"{gateway.url}/readyz")
                return response.status_code == 503

            await eventually(stopping, "/readyz answering 503")
            public = (await http.get(f"{gateway.url}/readyz")).json()
            healthy = await http.get(f"{gateway.url}/healthz")
            answer = await http.post(gateway.graphql_url, json={"query": "{ __typename }"})
            os.kill(gateway.pid, signal.SIGTERM)  # the second ends the grace
            await eventually(lambda: not gateway.running, "the gateway's exit")
    assert public == {"status": "stopping"}
    assert healthy.status_code == 200  # alive: an orchestrator must not kill it for draining
    assert answer.json() == {"data": {"__typename": "Query"}}
