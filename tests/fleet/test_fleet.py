"""Several gateway processes, one account: the fleet behaves as one gateway.

Real processes on 127.0.0.1: gateways started with `python -m gateway serve`, one simulator, a
Redis server of the test's own. Limits are small so that each test takes seconds. Tests wait
for events (calls made, statuses reported), never for durations: a busy machine makes them
slower, never red.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from gateway.settings import SimulatorSettings
from tests.fleet.conftest import fleet
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.waiting import eventually

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

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


def calls(simulator: SimulatorServer) -> int:
    """Upstream calls the simulator has answered since its stats were reset."""
    return simulator.query_stats()["calls"]


def statuses(gateways: list[GatewayProcess]) -> list[str]:
    return [gateway.readyz()["status"] for gateway in gateways]


def budgets_degraded(gateways: list[GatewayProcess]) -> list[bool]:
    return [gateway.readyz()["redis"]["failover"]["degraded"] for gateway in gateways]


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
            # A third of the way through the load's calls, Redis dies.
            await eventually(lambda: calls(simulator) >= 200, "200 upstream calls")
            redis_server.kill()
            # Each gateway's budget finds Redis gone at its next call, then serves calls on its
            # local share: the outage lasts until the fleet has made some of those.
            await eventually(
                lambda: budgets_degraded(gateways) == [True] * 3,
                "every gateway's budget on its local share",
                interval=0.1,
            )
            on_local_budgets = calls(simulator)
            await eventually(
                lambda: calls(simulator) >= on_local_budgets + 50, "50 calls on the local budgets"
            )
            assert statuses(gateways) == ["degraded"] * 3
            assert not load.done(), "the load ended before the outage: nothing was tested"
            redis_server.restart()  # on its port, empty
            bodies = await asyncio.wait_for(load, timeout=90)
            # Back on the shared budget once Redis answers again (probed about once a second,
            # on a call): ask for fresh ids through every gateway until all are back.
            fresh = iter(range(10_000, 20_000, 3))

            async def recovered() -> bool:
                await spread(http, gateways, distinct_ids(3, start=next(fresh)), per_query=1)
                return statuses(gateways) == ["ready"] * 3

            await eventually(recovered, "every gateway back on the shared Redis", interval=0.1)

    assert bodies == [{"data": {"jobs": [None] * 100}}] * 6
    stats = simulator.query_stats()
    assert stats["throttled"] == 0
    assert 0 < stats["peakWindow"] <= 50


async def test_one_id_is_served_promptly_behind_a_backlog(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    backlog_ids = distinct_ids(1000)
    with fleet(simulator, redis_server, 2, GATEWAY_UPSTREAM_QPS="100") as gateways:
        simulator.reset_stats()
        async with httpx.AsyncClient(timeout=120) as http:
            backlog = asyncio.ensure_future(
                asyncio.gather(
                    *(ask(http, gateways[0], backlog_ids[i : i + 100]) for i in range(0, 1000, 100))
                )
            )
            # The first burst is spent: the other 900 ids of the backlog wait for the budget.
            await eventually(lambda: calls(simulator) >= 100, "the backlog's first 100 calls")
            calls_when_served = {}
            for name, gateway, job_id in (
                ("same process", gateways[0], distinct_ids(1, start=5_000)[0]),
                ("other process", gateways[1], distinct_ids(1, start=6_000)[0]),
            ):
                body = await ask(http, gateway, [job_id])
                calls_when_served[name] = calls(simulator)
                assert body == {"data": {"jobs": [None]}}
            await backlog

    # Promptly is ahead of the backlog, not behind it: first come, first served, each probe's
    # call would follow the backlog's 1,000; served round-robin between requests, each probe
    # was answered while backlog ids were still waiting for their calls.
    assert calls_when_served["same process"] < 1000, calls_when_served
    assert calls_when_served["other process"] < 1000, calls_when_served


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

            async def round_of_demand() -> bool:
                """40 fresh ids, half to each process (both must learn the fleet's rate);
                whether the upstream has throttled since the stats were reset."""
                nonlocal next_id
                ids = distinct_ids(40, start=next_id)
                next_id += 40
                await spread(http, gateways, ids, per_query=20)
                return simulator.query_stats()["throttled"] > 0

            async def demand(seconds: float) -> None:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    await round_of_demand()

            simulator.reset_stats()
            # Until the upstream throttles (a busy machine may take a while to ask fast enough),
            # then long enough to learn its real limit.
            await eventually(round_of_demand, "the upstream throttling", interval=0)
            await demand(8)
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


SUBMIT = """mutation($input: SubmitJobInput!) { submitJob(input: $input) { job { id } } }"""


async def submit_job(http: httpx.AsyncClient, gateway: GatewayProcess, n: int) -> dict[str, Any]:
    job = {
        "functionName": "ImageCartoonize",
        "input": "oss://media.oss-cn-hangzhou.aliyuncs.com/in/face.jpg",
        "output": "oss://media.oss-cn-hangzhou.aliyuncs.com/out/{source}.gif",
        "userData": f"order {n}",
    }
    response = await http.post(
        gateway.graphql_url, json={"query": SUBMIT, "variables": {"input": job}}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=4)])
async def test_two_processes_share_one_submit_budget(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    # The upstream's submit limit is the gateway's: any excess would show as a throttled call.
    with fleet(simulator, redis_server, 2, GATEWAY_SUBMIT_QPS="4") as gateways:
        simulator.reset_stats()
        async with httpx.AsyncClient(timeout=120) as http:
            bodies = await asyncio.gather(
                *(submit_job(http, gateways[n % 2], n) for n in range(16))
            )

    for body in bodies:
        assert "errors" not in body, body
    assert len({body["data"]["submitJob"]["job"]["id"] for body in bodies}) == 16
    stats = simulator.stats()["actions"]["SubmitIProductionJob"]
    assert stats == {"calls": 16, "throttled": 0, "peakWindow": stats["peakWindow"]}
    # Both processes submitted at once; alone, each would have sent up to four a second.
    assert 0 < stats["peakWindow"] <= 4
