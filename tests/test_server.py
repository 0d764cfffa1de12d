"""Slow, silent and too many clients cost a bounded share of the gateway: real gateways served as
`python -m gateway serve` serves them (`server_options`), raw sockets playing the clients.

Timeouts are short (0.5 s) and the tests wait for the server's act (a close, an answer) with a
generous bound (`PATIENCE`); none asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from gateway.app import create_app
from gateway.server import Refusals, server_options
from gateway.settings import GatewaySettings
from tests.api.conftest import gateway_settings, without_request_ids
from tests.logs import warnings_and_errors
from tests.rawhttp import (
    PATIENCE,
    parse_responses,
    raw_connection,
    read_until_closed,
    request_head,
    trickle,
)
from tests.servers import SimulatorServer, run_asgi_server

pytestmark = pytest.mark.slow

QUERY = json.dumps({"query": "{ __typename }"}).encode()
#: Long enough that a connection this test sees closed was closed by the limit under test.
LONG = 600.0


@contextmanager
def serving(simulator: SimulatorServer, **overrides: Any) -> Iterator[str]:
    settings = gateway_settings(simulator, **overrides)
    with run_asgi_server(create_app(settings), lifespan="on", **server_options(settings)) as url:
        yield url


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def post_query(**headers: str | int) -> bytes:
    return request_head(
        "POST", "/graphql", content_type="application/json", content_length=len(QUERY), **headers
    )


async def test_connections_that_never_send_a_byte_are_closed(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # On main, 3,000 of them all stayed open for good.
    with serving(simulator, idle_timeout=0.5, header_timeout=LONG) as url:
        async with AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(raw_connection(url)) for _ in range(200)]
            received = await asyncio.gather(
                *(read_until_closed(reader) for reader, _ in connections)
            )
    assert received == [b""] * 200
    assert warnings_and_errors(caplog) == []


async def test_headers_trickled_are_cut_off(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A byte at a time, and then header lines for ever: the headers never end.
    with serving(simulator, header_timeout=0.5, idle_timeout=LONG) as url:
        async with raw_connection(url) as (reader, writer):
            trickler = asyncio.create_task(
                trickle(reader, writer, b"POST /graphql HTTP/1.1\r\nhost: gateway\r\n", then=b"x")
            )
            received = await read_until_closed(reader)
            await asyncio.wait_for(trickler, PATIENCE)
    assert received == b""
    assert warnings_and_errors(caplog) == []


async def test_a_connection_left_idle_after_its_answer_is_closed(
    simulator: SimulatorServer,
) -> None:
    with serving(simulator, idle_timeout=0.5, header_timeout=LONG) as url:
        async with raw_connection(url) as (reader, writer):
            writer.write(post_query() + QUERY)
            received = await read_until_closed(reader)
    [response] = parse_responses(received)
    assert (response.status, response.json()) == (200, {"data": {"__typename": "Query"}})


async def test_a_body_trickled_after_its_answer_is_cut_off(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Answered 413 before its body was read, the connection got uvicorn's keep-alive timer,
    # which every byte received put off: the rest of the body, trickled, held it open for good.
    with serving(simulator, idle_timeout=0.5, header_timeout=LONG, max_body_bytes=1024) as url:
        async with raw_connection(url) as (reader, writer):
            writer.write(request_head("POST", "/graphql", content_length=10_000_000))
            trickler = asyncio.create_task(trickle(reader, writer, b"", then=b"{"))
            received = await read_until_closed(reader)
            await asyncio.wait_for(trickler, PATIENCE)
    [response] = parse_responses(received)
    assert response.status == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
    assert warnings_and_errors(caplog) == []


@pytest.mark.parametrize("then", [b"", b" "], ids=["stalled", "trickled"])
async def test_a_slow_body_is_answered_408_and_the_connection_closed(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture, then: bytes
) -> None:
    with serving(simulator, body_timeout=0.5, idle_timeout=LONG, header_timeout=LONG) as url:
        async with raw_connection(url) as (reader, writer):
            # Far more body announced than a trickle delivers before the test ends.
            writer.write(
                request_head(
                    "POST", "/graphql", content_type="application/json", content_length=100_000
                )
            )
            trickler = asyncio.create_task(trickle(reader, writer, QUERY[:5], then=then))
            received = await read_until_closed(reader)
            await asyncio.wait_for(trickler, PATIENCE)
    [response] = parse_responses(received)
    assert response.status == 408
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert without_request_ids(response.json(), response.headers["x-request-id"]) == {
        "errors": [
            {
                "message": "Expected the whole request body within 0.5 s of its headers, "
                "received only part of it in that time.",
                "extensions": {"code": "REQUEST_TIMEOUT", "limit": 0.5},
            }
        ]
    }
    assert warnings_and_errors(caplog) == []


async def test_no_timer_cuts_a_request_being_answered_or_a_websocket(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.set_faults(latencyMs=1500)
    query = {"query": '{ job(id: "a1b2c3") { id } }'}
    timeouts = {"idle_timeout": 0.5, "header_timeout": 0.5, "body_timeout": 0.5}
    with serving(simulator, **timeouts) as url:
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            response = await http.post(f"{url}/graphql", json=query)
        async with connect(
            url.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        ) as socket:
            await socket.send(json.dumps({"type": "connection_init"}))
            await asyncio.wait_for(socket.recv(), PATIENCE)
            await asyncio.sleep(1.5)  # idle on a WebSocket, past every HTTP timer
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
            answer = json.loads(await asyncio.wait_for(socket.recv(), PATIENCE))
    assert response.json() == {"data": {"job": None}}
    assert answer == {"id": "1", "type": "next", "payload": {"data": {"job": None}}}
    assert warnings_and_errors(caplog) == []


async def test_connections_beyond_the_cap_are_closed_at_once(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(simulator, max_connections=3, idle_timeout=LONG, header_timeout=LONG) as url:
        async with AsyncExitStack() as stack:
            held = [await stack.enter_async_context(raw_connection(url)) for _ in range(3)]
            # Each answered once, so the server surely holds all three.
            for reader, writer in held:
                writer.write(post_query() + QUERY)
                await asyncio.wait_for(reader.readuntil(b'"Query"}}'), PATIENCE)
            for _ in range(2):
                async with raw_connection(url) as (reader, writer):
                    writer.write(post_query() + QUERY)
                    assert await read_until_closed(reader) == b""
            # The three held connections are served still.
            reader, writer = held[0]
            writer.write(post_query() + QUERY)
            await asyncio.wait_for(reader.readuntil(b'"Query"}}'), PATIENCE)
            # One leaves: a new connection gets its place.
            await stack.aclose()
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            for _ in range(200):
                try:
                    response = await http.post(
                        f"{url}/graphql",
                        content=QUERY,
                        headers={"content-type": "application/json"},
                    )
                    break
                except httpx.RemoteProtocolError:  # refused while the others were closing
                    await asyncio.sleep(0.05)
    assert response.json() == {"data": {"__typename": "Query"}}
    refusals = [record for record in caplog.records if record.name == "gateway.server"]
    # One warning for the refusals, however many: a flood must not flood the log.
    assert [record.levelname for record in refusals if record.levelno > logging.DEBUG] == [
        "WARNING"
    ]
    assert refusals[0].getMessage() == (
        "Refusing client connections: this process holds GATEWAY_MAX_CONNECTIONS (3) already "
        "(1 refused since the last such warning)"
    )


def test_the_serve_command_applies_the_limits() -> None:
    settings = GatewaySettings(idle_timeout=2.5, header_timeout=4, max_connections=7)
    options = server_options(settings)
    limits = options["http"].limits
    assert (limits.idle_timeout, limits.header_timeout, limits.max_connections) == (2.5, 4, 7)
    # uvicorn's own keep-alive timer, in whole seconds, never before ours.
    assert options["timeout_keep_alive"] == 3
    assert options["ws_max_size"] == settings.max_body_bytes


def test_refusals_are_warned_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals()
    for now in (0.0, 1.0, 2.0, 59.9, 60.0, 61.0):  # the clock is passed in: no waiting
        refusals.count(now, cap=3)
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.server"]
    assert [message.rsplit("(", 1)[1] for message in warnings] == [
        "1 refused since the last such warning)",
        "4 refused since the last such warning)",
    ]
