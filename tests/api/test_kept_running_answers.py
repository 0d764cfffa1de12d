"""Kept answers of running jobs on a real gateway: kept until the earliest expiry of the
snapshots they read, dropped as soon as one of those snapshots is replaced, never stale.

"The snapshot the gateway holds" is read with a query that is never kept (it asks
`ageSeconds`, which moves), so it executes and reads the snapshot cache as any miss would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.conftest import GatewayServer, StartGateway
from tests.api.test_kept_answers import get, kept, plant, post
from tests.servers import SimulatorServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

POLL = "query Poll($id: ID!) { job(id: $id) { id state fetchedAt } }"
POLL_MANY = "query PollMany($ids: [ID!]!) { jobs(ids: $ids) { id state fetchedAt } }"
#: The same fields and ageSeconds: never kept, so always executed.
HELD = "query Held($id: ID!) { job(id: $id) { id state fetchedAt ageSeconds } }"


def seen(answer: dict[str, Any]) -> tuple[str, str]:
    job = answer["data"]["job"]
    return job["state"], job["fetchedAt"]


async def held(http: httpx.AsyncClient, gateway: GatewayServer, job_id: str) -> tuple[str, str]:
    return seen((await post(http, gateway, HELD, id=job_id)).json())


async def test_every_poll_of_a_moving_job_matches_the_snapshot_the_gateway_holds(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000101", "Queuing")
    checked = 0
    for state in ("Queuing", "Analysing", "Analysing", "Success"):
        plant(simulator, job_id, state)
        for _ in range(25):  # about 2.5 running ttls (1 s) of polls a state
            before = await held(http, gateway, job_id)
            answer = seen((await post(http, gateway, POLL, id=job_id)).json())
            after = await held(http, gateway, job_id)
            # Served between the two reads: the snapshot held then was one of them, and a
            # kept answer older than `before` would be stale.
            assert answer in (before, after), (before, answer, after)
            checked += 1
            await asyncio.sleep(0.1)
    stats = await kept(http, gateway)
    assert checked == 100
    assert stats["hits"] > 0  # the polls were served from kept answers too
    final = (await post(http, gateway, POLL, id=job_id)).json()
    assert final["data"]["job"]["state"] == "SUCCESS"


async def test_an_answer_is_dropped_when_its_running_snapshot_is_replaced_early(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    moving = plant(simulator, "a11ce000000000000000000000000102", "Analysing")
    other = plant(simulator, "a11ce000000000000000000000000103", "Analysing")
    # One snapshot in memory at a time: asking for `other` pushes `moving` out, so the next
    # execution refetches it long before its 60 s ttl ends.
    with start_gateway(cache_running_ttl=60.0, cache_max_entries=1) as gateway:
        first = [(await post(http, gateway, POLL, id=moving)).json() for _ in range(3)]
        assert (await kept(http, gateway))["hits"] == 1
        await post(http, gateway, HELD, id=other)
        plant(simulator, moving, "Success")
        refetched = await held(http, gateway, moving)  # replaces the snapshot the answer read
        polled = (await post(http, gateway, POLL, id=moving)).json()
        stats = await kept(http, gateway)
    assert {seen(a)[0] for a in first} == {"ANALYSING"}
    assert refetched[0] == "SUCCESS"
    assert seen(polled) == refetched
    assert stats["outdated"] == 1


async def test_a_list_of_running_jobs_is_kept_until_its_snapshots_expire(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = [plant(simulator, f"a11ce00000000000000000000000011{n}", "Analysing") for n in range(3)]
    with start_gateway(cache_running_ttl=3.0) as gateway:
        answers = [(await post(http, gateway, POLL_MANY, ids=ids)).json() for _ in range(3)]
        hits = (await kept(http, gateway))["hits"]
        for job_id in ids:
            plant(simulator, job_id, "Success")
        # Only the poll itself is asked: nothing else refetches the snapshots, so what ends
        # the kept answer is its own expiry (that of the snapshots it read).
        later: dict[str, Any] = {}

        async def finished() -> bool:
            later.update((await post(http, gateway, POLL_MANY, ids=ids)).json())
            return {job["state"] for job in later["data"]["jobs"]} == {"SUCCESS"}

        await eventually(finished, "the poll answering the next state", interval=0.2)
    assert hits >= 1
    assert len({str(a) for a in answers}) == 1
    assert {job["state"] for job in answers[0]["data"]["jobs"]} == {"ANALYSING"}


async def test_a_kept_answer_of_running_jobs_gets_no_http_caching(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000104", "Analysing")
    with start_gateway(cache_running_ttl=60.0) as gateway:
        answers = [await get(http, gateway, POLL, id=job_id) for _ in range(3)]
        stats = await kept(http, gateway)
    assert stats["hits"] >= 1
    assert {a.content for a in answers} == {answers[0].content}
    assert [a.headers["cache-control"] for a in answers] == ["no-store"] * 3
    assert all("etag" not in a.headers for a in answers)
