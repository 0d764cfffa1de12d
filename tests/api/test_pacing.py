"""Long lists give the event loop turns and stop at the deadline: a `Pacer` on a hand-moved
clock, then a page of 20,000 files through a real gateway that allows pages that long."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gateway import errors
from gateway.api.pacing import Pacer
from gateway.simulator.jobs import success_result
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.api.test_subscriptions import graphql_ws, planted, subscribe
from tests.servers import SimulatorServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def drain(items: AsyncIterator[int], clock: Clock, step: float) -> list[int]:
    """Every item, the clock moving `step` seconds per item (the work done on it)."""
    seen = []
    async for item in items:
        seen.append(item)
        clock.now += step
    return seen


async def test_a_turn_of_the_loop_for_each_slice_of_work() -> None:
    clock = Clock()
    pacer = Pacer(deadline=None, timeout=10.0, clock=clock, turn_seconds=0.005)

    seen = await drain(pacer.paced(range(100)), clock, step=0.001)

    assert seen == list(range(100))
    # 100 items of 1 ms: a turn after every 5 of them (the first item finds 0 ms worked).
    assert pacer.turns == 19


async def test_other_tasks_run_during_the_turns() -> None:
    clock = Clock()
    pacer = Pacer(deadline=None, timeout=10.0, clock=clock, turn_seconds=0.005)
    events: list[str] = []

    async def other() -> None:
        events.append("other")

    async def paced() -> None:
        async for item in pacer.paced(range(10)):
            events.append(f"item {item}")
            clock.now += 0.003

    task = asyncio.create_task(other())
    await paced()
    await task

    # The other task ran at the first turn (after two items, 6 ms of work), not at the end.
    assert events.index("other") == 2


async def test_past_the_deadline_the_list_stops() -> None:
    clock = Clock()
    pacer = Pacer(deadline=clock.now + 0.010, timeout=0.01, clock=clock)
    items = pacer.paced(range(100))
    seen = [await anext(items) for _ in range(3)]
    clock.now += 0.010

    with pytest.raises(errors.DeadlineExceeded) as raised:
        await anext(items)

    assert seen == [0, 1, 2]
    assert raised.value.extensions == {"code": "DEADLINE_EXCEEDED"}
    assert raised.value.retryable


# --- a page of 20,000 files through a gateway -----------------------------------------------------

BIG_JOB = "f11e5000000000000000000000000001"
FILES = 20_000
SIGNED = f'{{ job(id: "{BIG_JOB}") {{ result {{ files {{ key signedUrl }} }} }} }}'


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Iterator[GatewayServer]:
    """A gateway whose operator lets one page hold every file of the big job (and its cost)."""
    with start_gateway(max_page_size=FILES, max_cost=1_000_000) as server:
        yield server


@pytest.fixture
def big_job(simulator: SimulatorServer) -> str:
    simulator.put_job(
        BIG_JOB,
        {
            "JobId": BIG_JOB,
            "FunctionName": "Cover",
            "State": "Success",
            "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/talk.mp4",
            "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}-{sequenceId}.jpg",
            "Result": success_result([f"out/talk-{n}.jpg" for n in range(FILES)]),
        },
    )
    return BIG_JOB


async def warm(http: httpx.AsyncClient, gateway: GatewayServer, job_id: str) -> None:
    """Fetch the job and build its files' views, so that what follows is the listing alone."""
    body = await graphql(
        http, gateway, f'{{ job(id: "{job_id}") {{ result {{ files {{ key }} }} }} }}'
    )
    assert len(body["data"]["job"]["result"]["files"]) == FILES


async def test_other_requests_are_answered_while_20000_urls_are_signed(
    gateway: GatewayServer, http: httpx.AsyncClient, big_job: str
) -> None:
    await warm(http, gateway, big_job)
    events: list[str] = []

    async def heavy() -> dict[str, Any]:
        # Strawberry sends the headers with the body, once the whole answer is made: their
        # arrival marks the end of the heavy request's work.
        async with http.stream("POST", gateway.graphql_url, json={"query": SIGNED}) as response:
            events.append("heavy answered")
            await response.aread()
            body: dict[str, Any] = response.json()
            return body

    heavy_task = asyncio.create_task(heavy())
    while not heavy_task.done():
        light = await graphql(http, gateway, "{ __typename }")
        assert light == {"data": {"__typename": "Query"}}
        if not heavy_task.done():
            events.append("light answered")
    body = await heavy_task

    # Held on the loop, the heavy request's 20,000 items would let at most the first light
    # request (sent before its work began) through before its own answer.
    assert events[:3] == ["light answered"] * 3
    assert "heavy answered" in events
    files = body["data"]["job"]["result"]["files"]
    assert len(files) == FILES
    assert [file["key"] for file in files] == [f"out/talk-{n}.jpg" for n in range(FILES)]
    assert all(file["signedUrl"].startswith("https://demo.oss-cn-shanghai") for file in files)


async def test_a_long_list_with_no_time_left_is_refused_before_it_runs(
    gateway: GatewayServer, http: httpx.AsyncClient, big_job: str
) -> None:
    # A deadline of 0 has passed when the request arrives: refused at the door, nothing signed
    # (the list stopping at a deadline that comes while it runs is `Pacer`'s test above, on a
    # clock moved by hand).
    await warm(http, gateway, big_job)

    body = await graphql(http, gateway, SIGNED, headers={"x-request-timeout": "0"})

    assert body == {
        "errors": [
            {
                "message": errors.DeadlineExceeded(
                    "the request waited to be served", timeout=0.0, retry_after=1.0
                ).message,
                "extensions": {"code": "DEADLINE_EXCEEDED", "retryAfter": 1.0},
            }
        ],
    }


async def test_each_subscription_event_has_a_deadline_of_its_own(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> None:
    job_id = "5ab5c1de0000000000000000000000f1"
    keys = [f"out/face-{n}.jpg" for n in range(40)]  # longer than a list completed unpaced
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = """subscription($id: ID!) {
      jobUpdates(id: $id, intervalSeconds: 0.5) { state result { files { key } } } }"""
    with start_gateway(request_deadline=0.5, cache_running_ttl=0.1) as gateway:
        async with graphql_ws(gateway) as socket:

            async def finish_later() -> None:
                await asyncio.sleep(1.0)  # past the subscription's first deadline
                simulator.put_job(job_id, planted(job_id, "Success", success_result(keys)))

            finisher = asyncio.create_task(finish_later())
            messages = await subscribe(socket, query, {"id": job_id})
            await finisher

    assert [message["payload"] for message in messages[:-1]] == [
        {"data": {"jobUpdates": {"state": "ANALYSING", "result": None}}},
        {
            "data": {
                "jobUpdates": {
                    "state": "SUCCESS",
                    "result": {"files": [{"key": key} for key in keys]},
                }
            }
        },
    ]
