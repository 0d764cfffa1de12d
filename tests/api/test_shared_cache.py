"""Two gateways sharing one Redis (127.0.0.1:6379) in front of one simulator, on real ports.

Each test uses a key prefix of its own, so runs never see each other's snapshots.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
import redis

from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.servers import SimulatorServer
from tests.support.gateway import ADMIN_HEADERS
from tests.support.redis import CLIENT_TIMEOUT, REDIS_URL

QUERY = "query($id: ID!) { job(id: $id) { id state fetchedAt requestId } }"
SUCCESS = json.dumps({"Code": "Success", "Message": "Successful.", "Data": "{}"})


def sharing(prefix: str, **settings: Any) -> dict[str, Any]:
    """Settings of a gateway sharing the test Redis under `prefix`. Its Redis timeout is long:
    here a slow answer from a busy machine must not pass for an outage."""
    return {
        "redis_url": REDIS_URL,
        "redis_prefix": prefix,
        "redis_timeout": CLIENT_TIMEOUT,
        **settings,
    }


def planted(job_id: str, state: str) -> dict[str, str]:
    fields = {
        "JobId": job_id,
        "FunctionName": "ImageCartoonize",
        "State": state,
        "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
        "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}.jpg",
    }
    if state in ("Success", "Fail"):
        fields["Result"] = SUCCESS
    return fields


async def job_through(
    http: httpx.AsyncClient, gateway: GatewayServer, job_id: str
) -> dict[str, Any] | None:
    body = await graphql(http, gateway, QUERY, {"id": job_id})
    assert "errors" not in body, body
    job: dict[str, Any] | None = body["data"]["job"]
    return job


async def readyz(http: httpx.AsyncClient, gateway: GatewayServer) -> dict[str, Any]:
    response = await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def test_a_terminal_job_fetched_through_one_gateway_is_served_by_the_other_for_free(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    job_id = "5ab5c1de00000000000000000000a001"
    simulator.put_job(job_id, planted(job_id, "Success"))
    with (
        start_gateway(**sharing(prefix)) as a,
        start_gateway(**sharing(prefix)) as b,
    ):
        calls = simulator.query_stats()["calls"]
        through_a = await job_through(http, a, job_id)
        assert simulator.query_stats()["calls"] == calls + 1

        through_b = await job_through(http, b, job_id)

    assert simulator.query_stats()["calls"] == calls + 1
    # The very same snapshot: same upstream RequestId, same fetch time.
    assert through_b == through_a
    assert through_a is not None
    assert through_a["state"] == "SUCCESS"


async def test_a_running_job_is_shared_for_its_short_ttl(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    job_id = "5ab5c1de00000000000000000000a002"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    settings = sharing(prefix, cache_running_ttl=60.0)
    shared = redis.Redis.from_url(REDIS_URL)
    key = f"{prefix}:job:{{{job_id}}}"
    try:
        with start_gateway(**settings) as a, start_gateway(**settings) as b:
            calls = simulator.query_stats()["calls"]
            through_a = await job_through(http, a, job_id)
            simulator.put_job(job_id, planted(job_id, "Success"))  # moves on upstream
            # Shared for the running ttl (a minute here), not the terminal one (a day).
            assert 0 < shared.pttl(key) <= 60_000

            # Within the ttl, B serves A's snapshot: one call for the two gateways.
            assert await job_through(http, b, job_id) == through_a
            assert simulator.query_stats()["calls"] == calls + 1

            shared.delete(key)  # the ttl is over: Redis drops the key, as it would by itself
            later = await job_through(http, b, job_id)
    finally:
        shared.close()

    assert simulator.query_stats()["calls"] == calls + 2
    assert through_a is not None
    assert later is not None
    assert (through_a["state"], later["state"]) == ("ANALYSING", "SUCCESS")


async def test_two_gateways_asked_at_once_for_the_same_running_jobs_call_once_per_id(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    # Both gateways miss every id at the same moment, as when the shared entries of polled
    # running jobs expire: the fetch claims make the fleet call once per id, not once per
    # gateway.
    ids = [f"5ab5c1de000000000000000000c0{n:04d}" for n in range(20)]
    for job_id in ids:
        simulator.put_job(job_id, planted(job_id, "Analysing"))
    # A running ttl far longer than the test: no entry expires between the two gateways' reads.
    settings = sharing(prefix, cache_running_ttl=60.0)
    query = "query($ids: [ID!]!) { jobs(ids: $ids) { id state } }"
    with start_gateway(**settings) as a, start_gateway(**settings) as b:
        calls = simulator.query_stats()["calls"]
        bodies = await asyncio.gather(
            *(
                graphql(http, gateway, query, {"ids": ids[::step]})
                for gateway in (a, b, a, b)
                for step in (1, -1)
            )
        )
        after = simulator.query_stats()["calls"]
        reports = [await readyz(http, gateway) for gateway in (a, b)]

    for body in bodies:
        assert "errors" not in body, body
        assert {job["state"] for job in body["data"]["jobs"]} == {"ANALYSING"}
    assert after - calls == len(ids)
    assert [report["claims"]["shared"] for report in reports] == [True, True]
    fetchers = [report["fetcher"] for report in reports]
    assert sum(fetcher["upstreamCalls"] for fetcher in fetchers) == len(ids)


async def test_an_unknown_id_is_remembered_by_both(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    job_id = "0000000000000000000000000000dead"
    settings = sharing(prefix, cache_not_found_ttl=60.0)
    with start_gateway(**settings) as a, start_gateway(**settings) as b:
        calls = simulator.query_stats()["calls"]
        assert await job_through(http, a, job_id) is None
        assert await job_through(http, b, job_id) is None
        assert await job_through(http, b, job_id) is None
    assert simulator.query_stats()["calls"] == calls + 1


async def test_gateways_with_other_prefixes_share_nothing(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    job_id = "5ab5c1de00000000000000000000a003"
    simulator.put_job(job_id, planted(job_id, "Fail"))
    with (
        start_gateway(**sharing(prefix)) as a,
        start_gateway(**sharing(f"{prefix}:other")) as b,
    ):
        calls = simulator.query_stats()["calls"]
        await job_through(http, a, job_id)
        await job_through(http, b, job_id)
    assert simulator.query_stats()["calls"] == calls + 2


async def test_readyz_without_redis(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    report = await readyz(http, gateway)
    assert report["status"] == "ready"
    assert report["redis"] == {"configured": False, "reachable": False, "failover": None}
    assert report["cache"] == {"shared": False}
    assert report["claims"] == {"shared": False}
    assert report["budget"]["shared"] is False
    assert report["budget"]["limit"] == gateway.settings.upstream_qps


async def test_readyz_with_redis(
    start_gateway: StartGateway, http: httpx.AsyncClient, prefix: str
) -> None:
    with start_gateway(**sharing(prefix)) as gateway:
        report = await readyz(http, gateway)
    assert report["status"] == "ready"
    assert report["redis"] == {
        "configured": True,
        "reachable": True,
        "failover": {"degraded": False, "degradedFor": None, "failovers": 0, "lastError": None},
    }
    assert report["cache"] == {"shared": True}
    assert report["claims"] == {"shared": True}
    assert report["budget"]["shared"] is True
    assert report["budget"]["limit"] == 100
    assert {"effectiveLimit", "inFlight", "waiting", "nextFreeIn"} <= set(report["budget"])


async def test_an_unreachable_redis_degrades_but_serves(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = "5ab5c1de00000000000000000000a004"
    simulator.put_job(job_id, planted(job_id, "Success"))
    caplog.set_level(logging.INFO)
    with start_gateway(
        redis_url="redis://:hunter2@127.0.0.1:1/0",
        redis_prefix="unused",
        upstream_qps=60,
        expected_replicas=4,
    ) as gateway:
        calls = simulator.query_stats()["calls"]
        first = await job_through(http, gateway, job_id)
        again = await job_through(http, gateway, job_id)  # from the local fallback cache
        report = await readyz(http, gateway)
        text = (await http.get(f"{gateway.url}/readyz")).text

    assert first is not None
    assert again == first
    assert simulator.query_stats()["calls"] == calls + 1
    assert report["status"] == "degraded"
    assert report["redis"]["configured"] is True
    assert report["redis"]["reachable"] is False
    assert report["redis"]["failover"]["degraded"] is True
    # What failed, not where: the location is for the logs only.
    assert report["redis"]["failover"]["lastError"].startswith("ConnectionError")
    assert "127.0.0.1" not in text
    assert report["cache"] == {"shared": False}
    assert report["claims"] == {"shared": False}
    assert report["budget"]["shared"] is False
    assert report["budget"]["limit"] == 15  # 60 calls/s shared by 4 replicas
    assert "hunter2" not in text
    assert "hunter2" not in caplog.text
    # One warning for the whole switch: budget, cache and claims together.
    unreachable = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert "serving on a local budget of 15 calls/s" in unreachable[0].getMessage()
