"""Several gateway processes, one account: the fleet behaves as one gateway.

Real processes on 127.0.0.1: gateways started with `python -m gateway serve`, one simulator, a
Redis server of the test's own. Limits are small so that each test takes seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from gateway.settings import SimulatorSettings
from tests.api.conftest import SimulatorServer
from tests.fleet.conftest import GatewayProcess, RedisServer, fleet

JOBS = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"


def distinct_ids(count: int, start: int = 1) -> list[str]:
    return [f"{n:032x}" for n in range(start, start + count)]


async def ask(
    http: httpx.AsyncClient, gateway: GatewayProcess, ids: list[str], **headers: str
) -> dict[str, Any]:
    response = await http.post(
        gateway.graphql_url, json={"query": JOBS, "variables": {"ids": ids}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def spread(
    http: httpx.AsyncClient, gateways: list[GatewayProcess], ids: list[str], per_query: int = 100
) -> list[dict[str, Any]]:
    """Asks for `ids` `per_query` at a time, round-robin over the gateways, all at once."""
    batches = [ids[i : i + per_query] for i in range(0, len(ids), per_query)]
    return await asyncio.gather(
        *(ask(http, gateways[n % len(gateways)], batch) for n, batch in enumerate(batches))
    )


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=50)])
async def test_three_processes_share_one_budget(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    ids = distinct_ids(600)
    with fleet(simulator, redis_server, 3, GATEWAY_UPSTREAM_QPS="50") as gateways:
        simulator.reset_stats()
        async with httpx.AsyncClient(timeout=120) as http:
            bodies = await spread(http, gateways, ids)

    assert bodies == [{"data": {"jobs": [None] * 100}}] * 6
    stats = simulator.query_stats()
    assert stats == {"calls": 600, "throttled": 0, "peakWindow": stats["peakWindow"]}
    assert 0 < stats["peakWindow"] <= 50


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=50)])
async def test_redis_outage_half_way_keeps_the_limit_and_recovers(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    ids = distinct_ids(600)
    with fleet(simulator, redis_server, 3, GATEWAY_UPSTREAM_QPS="50") as gateways:
        simulator.reset_stats()
        async with httpx.AsyncClient(timeout=120) as http:
            load = asyncio.ensure_future(spread(http, gateways, ids))
            await asyncio.sleep(4)
            redis_server.stop()
            await asyncio.sleep(4)
            degraded = [gateway.readyz() for gateway in gateways]
            redis_server.start()
            bodies = await asyncio.wait_for(load, timeout=90)
            # Back on the shared budget once Redis answers again (probed about once a second).
            await asyncio.sleep(3)
            await spread(http, gateways, distinct_ids(30, start=10_000))
            recovered = [gateway.readyz() for gateway in gateways]

    assert bodies == [{"data": {"jobs": [None] * 100}}] * 6
    assert [status["status"] for status in degraded] == ["degraded"] * 3
    assert [status["status"] for status in recovered] == ["ready"] * 3
    stats = simulator.query_stats()
    assert stats["throttled"] == 0
    assert 0 < stats["peakWindow"] <= 50


async def test_one_id_is_served_promptly_behind_a_backlog(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    backlog_ids = distinct_ids(1000)
    with fleet(simulator, redis_server, 2, GATEWAY_UPSTREAM_QPS="100") as gateways:
        async with httpx.AsyncClient(timeout=120) as http:
            backlog = asyncio.ensure_future(
                asyncio.gather(
                    *(ask(http, gateways[0], backlog_ids[i : i + 100]) for i in range(0, 1000, 100))
                )
            )
            await asyncio.sleep(1.0)  # the backlog is queued: about 900 ids still wait
            waited = {}
            for name, gateway, job_id in (
                ("same process", gateways[0], distinct_ids(1, start=5_000)[0]),
                ("other process", gateways[1], distinct_ids(1, start=6_000)[0]),
            ):
                started = time.monotonic()
                body = await ask(http, gateway, [job_id])
                waited[name] = time.monotonic() - started
                assert body == {"data": {"jobs": [None]}}
            assert not backlog.done(), "the backlog ended before the probes: nothing measured"
            await backlog

    assert waited["same process"] < 2.0, waited
    assert waited["other process"] < 2.0, waited


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=100)])
async def test_the_fleet_slows_down_when_the_upstream_throttles_below_the_budget(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    # Another application takes part of the account: the upstream lets us have 20 calls a
    # second although our budget says 50.
    simulator.set_faults(qps=20)
    with fleet(
        simulator, redis_server, 2, GATEWAY_UPSTREAM_QPS="50", GATEWAY_MAX_RETRIES="5"
    ) as gateways:
        async with httpx.AsyncClient(timeout=120) as http:
            next_id = 1

            async def demand(seconds: float) -> list[dict[str, Any]]:
                nonlocal next_id
                bodies = []
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    ids = distinct_ids(40, start=next_id)
                    next_id += 40
                    # Half to each process: both must learn the fleet's rate.
                    bodies += await spread(http, gateways, ids, per_query=20)
                return bodies

            simulator.reset_stats()
            await demand(8)  # long enough to learn the upstream's real limit
            learned = simulator.query_stats()
            simulator.reset_stats()
            await demand(6)
            settled = simulator.query_stats()
            rates = [gateway.readyz()["budget"]["effectiveLimit"] for gateway in gateways]

    assert learned["throttled"] > 0, "the upstream never throttled: the test proves nothing"
    assert settled["throttled"] == 0, settled
    assert settled["calls"] > 0
    assert settled["peakWindow"] <= 20
    assert all(rate <= 20 for rate in rates), rates
