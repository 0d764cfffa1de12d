"""The gateway's ASGI middleware under plain uvicorn, as `uvicorn --factory` runs the gateway:
apps built inline, raw sockets playing slow clients."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.middleware import BodyReadTimeout
from tests.rawhttp import (
    PATIENCE,
    parse_responses,
    raw_connection,
    read_until_closed,
    request_head,
    trickle,
)
from tests.servers import run_asgi_server


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    # Then wait a while for the client to leave, as streaming responses do: not a body read.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receive(), 1.0)
    await Response(body)(scope, receive, send)


async def test_a_body_that_does_not_arrive_in_time_is_answered_408() -> None:
    with run_asgi_server(BodyReadTimeout(echo, timeout=0.5)) as url:
        async with raw_connection(url) as (reader, writer):
            writer.write(request_head("POST", "/", content_length=100))
            trickler = asyncio.create_task(trickle(reader, writer, b"0123456789"))
            received = await read_until_closed(reader)
            await asyncio.wait_for(trickler, PATIENCE)
    [response] = parse_responses(received)
    assert (response.status, response.headers["connection"]) == (408, "close")
    assert response.json() == {
        "errors": [
            {
                "message": "Expected the whole request body within 0.5 s of its headers, "
                "received only part of it in that time.",
                "extensions": {"code": "REQUEST_TIMEOUT", "limit": 0.5},
            }
        ]
    }


async def test_only_waiting_for_the_body_is_timed() -> None:
    with run_asgi_server(BodyReadTimeout(echo, timeout=0.5)) as url:
        async with raw_connection(url) as (reader, writer):
            writer.write(request_head("POST", "/", content_length=5, connection="close") + b"hello")
            received = await read_until_closed(reader)
    [response] = parse_responses(received)
    assert (response.status, response.body) == (200, b"hello")
