"""jobUpdates over a real WebSocket (graphql-transport-ws), against a real simulator."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.settings import (
    SimulatorSettings,
)
from tests.api.conftest import GatewayServer, StartGateway, without_request_ids
from tests.servers import SimulatorServer
from tests.support.waiting import SAFETY_TIMEOUT, eventually

UPDATES = """
subscription($id: ID!, $interval: Float!) {
  jobUpdates(id: $id, intervalSeconds: $interval) { id state isFinished result { code } }
}
"""


def polled_since(simulator: SimulatorServer, before: int, polls: int) -> bool:
    calls: int = simulator.query_stats()["calls"]
    return calls >= before + polls


@asynccontextmanager
async def graphql_ws(gateway: GatewayServer) -> AsyncIterator[ClientConnection]:
    url = gateway.graphql_url.replace("http://", "ws://")
    async with connect(url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        await socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        yield socket


async def start(socket: ClientConnection, query: str, variables: dict[str, Any]) -> None:
    """Starts subscription "1" (or a query: the protocol runs both the same way)."""
    payload = {"query": query, "variables": variables}
    await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))


async def receive(socket: ClientConnection) -> dict[str, Any]:
    """The next message; the bound only catches a hang."""
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), SAFETY_TIMEOUT))
    return message


async def subscribe(
    socket: ClientConnection, query: str, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every message of one subscription, up to and including its `complete`."""
    await start(socket, query, variables)
    messages = []
    assert socket.response is not None
    request_id = socket.response.headers["x-request-id"]
    while True:
        message = await receive(socket)
        messages.append(without_request_ids(message, request_id))
        if message["type"] in ("complete", "error"):
            return messages


def planted(job_id: str, state: str, result: str | None = None) -> dict[str, str]:
    fields = {
        "JobId": job_id,
        "FunctionName": "ImageCartoonize",
        "State": state,
        "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
        "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}.jpg",
        "JobParams": '{mode:"gif"}',
        "UserData": "null",
    }
    if result is not None:
        fields["Result"] = result
    return fields


@pytest.mark.slow
async def test_updates_follow_a_job_until_it_finishes(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> None:
    job_id = "5ab5c1de0000000000000000000000aa"
    success = json.dumps({"Code": "Success", "Message": "Successful.", "Data": "{}"})
    simulator.put_job(job_id, planted(job_id, "Queuing"))
    with start_gateway(cache_running_ttl=0.1) as gateway:
        async with graphql_ws(gateway) as socket:
            await start(socket, UPDATES, {"id": job_id, "interval": 0.5})
            messages = [await receive(socket)]
            for state, result in (("Analysing", None), ("Success", success)):
                # Two more polls find no change (and send nothing), then the job moves on.
                polled = simulator.query_stats()["calls"]
                await eventually(
                    functools.partial(polled_since, simulator, polled, 2),
                    "two polls of an unchanged job",
                )
                simulator.put_job(job_id, planted(job_id, state, result))
                messages.append(await receive(socket))
            messages.append(await receive(socket))

    events = [message["payload"]["data"]["jobUpdates"] for message in messages[:-1]]
    assert messages[-1] == {"id": "1", "type": "complete"}
    # One event per change, not per poll; the last one is final.
    assert events == [
        {"id": job_id, "state": "QUEUING", "isFinished": False, "result": None},
        {"id": job_id, "state": "ANALYSING", "isFinished": False, "result": None},
        {"id": job_id, "state": "SUCCESS", "isFinished": True, "result": {"code": "Success"}},
    ]


async def test_updates_of_an_unknown_job_are_one_null(
    simulator: SimulatorServer, gateway: GatewayServer
) -> None:
    async with graphql_ws(gateway) as socket:
        messages = await subscribe(
            socket, UPDATES, {"id": "0000000000000000000000000000dead", "interval": 1}
        )
    assert messages == [
        {"id": "1", "type": "next", "payload": {"data": {"jobUpdates": None}}},
        {"id": "1", "type": "complete"},
    ]


async def test_updates_of_a_malformed_id_end_with_its_error(
    simulator: SimulatorServer, gateway: GatewayServer
) -> None:
    async with graphql_ws(gateway) as socket:
        messages = await subscribe(socket, UPDATES, {"id": "not an id", "interval": 1})
    message = "Job id 'not an id' is invalid: expected only letters, digits, '_' and '-', "
    message += "received ' ' at position 3."
    # Strawberry reports an error raised inside a subscription without a path.
    assert messages == [
        {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {
                        "message": message,
                        "extensions": {"code": "INVALID_JOB_ID", "jobId": "not an id"},
                    }
                ],
            },
        },
        {"id": "1", "type": "complete"},
    ]
    assert simulator.query_stats()["calls"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "simulator_settings", [SimulatorSettings(queue_seconds=0.6, run_seconds=0.6)]
)
async def test_a_submitted_job_is_followed_through_its_real_lifecycle(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> None:
    job_id = await simulator.submit_job(
        {
            "FunctionName": "CaptionExtraction",
            "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/talk.mp4",
            "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}-{sequenceId}.srt",
        }
    )
    with start_gateway(cache_running_ttl=0.1) as gateway:
        async with graphql_ws(gateway) as socket:
            messages = await subscribe(socket, UPDATES, {"id": job_id, "interval": 0.5})

    states = [message["payload"]["data"]["jobUpdates"]["state"] for message in messages[:-1]]
    assert states[-1] == "SUCCESS"
    assert states == sorted(set(states), key=["QUEUING", "ANALYSING", "SUCCESS"].index)
    assert messages[-1]["type"] == "complete"


@pytest.mark.slow
async def test_each_operation_of_a_connection_has_its_own_deadline_and_answers(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> None:
    job_id = "5ab5c1de0000000000000000000000bb"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = "query($id: ID!) { job(id: $id) { id state } }"
    with start_gateway(request_deadline=1.0, cache_running_ttl=0.1) as gateway:
        async with graphql_ws(gateway) as socket:
            first = await subscribe(socket, query, {"id": job_id})
            simulator.put_job(job_id, planted(job_id, "Success", "{}"))
            # Longer than the connection's first deadline, and than the running ttl.
            await asyncio.sleep(1.5)
            second = await subscribe(socket, query, {"id": job_id})

    assert first[0]["payload"] == {"data": {"job": {"id": job_id, "state": "ANALYSING"}}}
    # Neither refused for a deadline that passed long ago, nor served from the first answer.
    assert second[0]["payload"] == {"data": {"job": {"id": job_id, "state": "SUCCESS"}}}


async def test_updates_of_a_job_that_keeps_failing_end_with_the_error(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> None:
    simulator.set_faults(errorRate=1.0)
    with start_gateway(request_deadline=1.0, max_retries=0) as gateway:
        async with graphql_ws(gateway) as socket:
            messages = await subscribe(
                socket, UPDATES, {"id": simulator.demo_ids()[0], "interval": 0.5}
            )

    [error] = messages[0]["payload"]["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert messages[1:] == [{"id": "1", "type": "complete"}]
    # Retried quietly for about one request deadline (1 s at 0.5 s: at least 3 polls), no more.
    assert 3 <= simulator.query_stats()["calls"] <= 4
