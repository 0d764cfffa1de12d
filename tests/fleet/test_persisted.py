"""Automatic persisted queries across a fleet: a document registered on one gateway process is
run by hash on another, through their Redis; with Redis killed, each process keeps serving the
documents it holds and registers new ones in its own memory; with Redis back, sharing resumes.
Real `python -m gateway serve` processes, a Redis of the test's own."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import fleet
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.waiting import eventually

# One worker runs every fleet test, one after the other (tests/fleet/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]

FIRST = "query First($id: ID!) { job(id: $id) { id state } }"
SECOND = "query Second($id: ID!) { job(id: $id) { id functionName } }"
THIRD = "query Third($id: ID!) { job(id: $id) { id } }"


def persisted(document: str) -> dict[str, Any]:
    sha256 = hashlib.sha256(document.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256}}


async def by_hash(
    http: httpx.AsyncClient, gateway: GatewayProcess, document: str, job_id: str
) -> dict[str, Any]:
    response = await http.post(
        gateway.graphql_url,
        json={"variables": {"id": job_id}, "extensions": persisted(document)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def register(
    http: httpx.AsyncClient, gateway: GatewayProcess, document: str, job_id: str
) -> dict[str, Any]:
    response = await http.post(
        gateway.graphql_url,
        json={"query": document, "variables": {"id": job_id}, "extensions": persisted(document)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def not_found(body: dict[str, Any]) -> bool:
    codes = [error["extensions"]["code"] for error in body.get("errors", [])]
    return codes == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_hash_registered_on_one_process_runs_on_another_and_survives_redis_outages(
    simulator: SimulatorServer, redis_server: RedisServer
) -> None:
    job_id = simulator.demo_ids()[0]
    first = {"data": {"job": {"id": job_id, "state": "SUCCESS"}}}
    with fleet(simulator, redis_server, 2) as (a, b):
        async with httpx.AsyncClient(timeout=60) as http:
            assert not_found(await by_hash(http, b, FIRST, job_id))
            assert await register(http, a, FIRST, job_id) == first
            # B never saw the text: it read the document from Redis.
            assert await by_hash(http, b, FIRST, job_id) == first

            redis_server.kill()
            # Each process still runs what it holds (B kept what it read), ...
            assert await by_hash(http, b, FIRST, job_id) == first
            assert await by_hash(http, a, FIRST, job_id) == first
            # ... and registers in its own memory: nothing is shared while Redis is down.
            second = await register(http, a, SECOND, job_id)
            assert second["data"]["job"]["functionName"] == "ImageCartoonize"
            assert await by_hash(http, a, SECOND, job_id) == second
            assert not_found(await by_hash(http, b, SECOND, job_id))
            assert {a.readyz()["status"], b.readyz()["status"]} == {"degraded"}

            redis_server.restart()  # empty

            async def shared_again() -> bool:
                # Registered while A may still be on its own: until A is back on Redis, B
                # does not find it.
                await register(http, a, THIRD, job_id)
                return not not_found(await by_hash(http, b, THIRD, job_id))

            await eventually(shared_again, "a registration on A reaching B through Redis")
            assert await by_hash(http, b, THIRD, job_id) == {"data": {"job": {"id": job_id}}}
