"""Gateway processes on a Redis Cluster (`GATEWAY_REDIS_CLUSTER`): the fleet shares its budget,
cache and fetch claims through a real three-node cluster, as through one Redis.

Every key a script or a pipeline touches shares a hash tag, so each command lands on one node;
a key that did not would fail here with CROSSSLOT (the unit tests of the budget, cache and
claims run on the cluster too, through their `client` fixture).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from gateway.settings import SimulatorSettings
from tests.fleet.conftest import fleet
from tests.fleet.test_fleet import ask, calls, distinct_ids
from tests.servers import SimulatorServer
from tests.support.redis import (
    RedisCluster,
    connect_cluster,
    delete_prefix,
    key_names,
    unique_prefix,
)

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

RUNNING = {"FunctionName": "ImageCartoonize", "State": "Analysing"}


@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=50)])
async def test_two_processes_on_a_cluster_share_budget_cache_and_claims(
    simulator: SimulatorServer, redis_cluster: RedisCluster
) -> None:
    ids = distinct_ids(40, start=0xC1)
    for job_id in ids:
        simulator.put_job(job_id, {"JobId": job_id, **RUNNING})
    settings = {
        "GATEWAY_REDIS_CLUSTER": "true",
        "GATEWAY_UPSTREAM_QPS": "50",
        # Longer than the test: no shared entry expires between the two gateways' reads.
        "GATEWAY_CACHE_RUNNING_TTL": "60",
    }
    with fleet(simulator, redis_cluster, 2, **settings) as gateways:
        simulator.reset_stats()
        async with httpx.AsyncClient(timeout=120) as http:
            # Both gateways miss every id at once: the claims make one call per id.
            bodies = await asyncio.gather(
                *(ask(http, gateway, ids[::step]) for gateway in gateways for step in (1, -1))
            )
            after_misses = calls(simulator)
            # Then each is served from the shared cache, without a call.
            again = await asyncio.gather(*(ask(http, gateway, ids) for gateway in gateways))
        reports = [gateway.readyz() for gateway in gateways]

    for body in [*bodies, *again]:
        assert "errors" not in body, body
        assert {job["id"] for job in body["data"]["jobs"]} == set(ids)
    assert after_misses == len(ids)
    assert calls(simulator) == len(ids)
    assert simulator.query_stats()["throttled"] == 0
    for report in reports:
        assert report["status"] == "ready"
        assert report["redis"]["reachable"] is True
        assert report["redis"]["failover"]["failovers"] == 0
        assert (report["cache"], report["claims"]) == ({"shared": True}, {"shared": True})
        assert report["budget"]["shared"] is True


async def test_the_cluster_holds_the_fleet_s_keys_on_more_than_one_node(
    simulator: SimulatorServer, redis_cluster: RedisCluster
) -> None:
    ids = distinct_ids(30, start=0xC100)
    prefix = unique_prefix()
    settings = {"GATEWAY_REDIS_CLUSTER": "true", "GATEWAY_REDIS_PREFIX": prefix}
    with fleet(simulator, redis_cluster, 1, **settings) as [gateway]:
        async with httpx.AsyncClient(timeout=120) as http:
            body = await ask(http, gateway, ids)
    assert body == {"data": {"jobs": [None] * len(ids)}}
    client = await connect_cluster(redis_cluster.url)
    try:
        keys = await key_names(client, f"{prefix}:*")
        assert isinstance(client, ClusterClient)
        nodes = set()
        for key in keys:
            node = client.get_node_from_key(key)
            assert node is not None
            nodes.add(node.port)
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()
    # Each unknown id is cached under its own hash tag, the budget under one of its own.
    assert len([key for key in keys if ":job:" in key]) == len(ids)
    assert any(":budget:" in key for key in keys)
    assert len(nodes) > 1
