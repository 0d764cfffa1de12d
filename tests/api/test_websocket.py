"""Whatever a client sends over `graphql-transport-ws`, it gets the protocol's answer: a close
frame with 4400 for a frame that is not a protocol message, an `error` message with a code for an
operation that fails before it runs, and never a dropped socket or an error in the log. A real
gateway on a real port; frames sent with `websockets`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from gateway.app import create_app
from tests.api.conftest import (
    GatewayServer,
    StartGateway,
    answer,
    gateway_settings,
    without_request_ids,
)
from tests.api.test_subscriptions import planted
from tests.logs import warnings_and_errors
from tests.servers import SimulatorServer, run_asgi_server

JOB = "query($id: ID!) { job(id: $id) { id } }"


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@asynccontextmanager
async def socket_to(
    gateway: GatewayServer, *, init: bool = True, protocol: str = "graphql-transport-ws"
) -> AsyncIterator[ClientConnection]:
    url = gateway.graphql_url.replace("http://", "ws://")
    async with connect(url, subprotocols=[protocol]) as socket:  # type: ignore[list-item]
        if init:
            await socket.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await receive(socket)) == {"type": "connection_ack"}
        yield socket


async def receive(socket: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(socket.recv(), timeout=20)


async def close_frame(socket: ClientConnection) -> Close:
    """The close frame the gateway ended the connection with; nothing else may come first."""
    with pytest.raises(ConnectionClosed) as closed:
        await receive_all(socket)
    assert closed.value.rcvd is not None, "The socket was dropped without a close frame."
    return closed.value.rcvd


async def receive_all(socket: ClientConnection) -> None:
    unexpected = await receive(socket)
    pytest.fail(f"Expected the socket to close, received {unexpected!r}.")


async def operation(socket: ClientConnection, payload: dict[str, Any], id: str = "1") -> list[Any]:
    """Every message of one operation, up to its `complete` or `error`."""
    await socket.send(json.dumps({"id": id, "type": "subscribe", "payload": payload}))
    messages = []
    assert socket.response is not None
    request_id = socket.response.headers["x-request-id"]
    while True:
        message = json.loads(await receive(socket))
        messages.append(without_request_ids(message, request_id))
        if message["type"] in ("complete", "error"):
            return messages


def subscribe(payload: object, id: object = "1") -> str:
    return json.dumps({"id": id, "type": "subscribe", "payload": payload})


TYPES = "connection_init, ping, pong, subscribe, complete"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        # Each of these raised a TypeError in Strawberry's handler: the socket was dropped
        # (1006, no close frame) and the log got a traceback.
        ("[1, 2]", "Expected a message to be a JSON object, received an array."),
        ('"subscribe"', "Expected a message to be a JSON object, received a string."),
        ("null", "Expected a message to be a JSON object, received null."),
        ('{"type": "subscribe", "id": "1", "payload": "{ __typename }"}',
         "Expected a subscribe payload to be an object, received a string."),
        ('{"type": "complete", "id": ["1"]}',
         "Expected a complete id to be a non-empty string, received an array."),
        # These ended as an INTERNAL_ERROR, or as a bare `complete` and a traceback.
        (subscribe({"query": 7}),
         "Expected the subscribe payload's query to be a string, received a number."),
        (subscribe({"query": "{ __typename }", "variables": "notanobject"}),
         "Expected the subscribe payload's variables to be an object or null, received a "
         "string."),
        (subscribe({"query": "{ __typename }", "operationName": 7}),
         "Expected the subscribe payload's operationName to be a string or null, received a "
         "number."),
        (subscribe({"query": "{ __typename }"}, id=7),
         "Expected a subscribe id to be a non-empty string, received a number."),
        (subscribe({"query": "{ __typename }"}, id=""),
         "Expected a subscribe id to be a non-empty string, received an empty string."),
        ('{"type": 7}', f"Expected a message type among {TYPES}, received a number."),
        ('{"type": "start"}', f"Expected a message type among {TYPES}, received 'start'."),
        ('{"type": "ping", "payload": 7}',
         "Expected a ping payload to be an object or null, received a number."),
        # Nested beyond the recursion limit: a RecursionError dropped the socket.
        ("[" * 30_000 + "]" * 30_000, "WebSocket message must be valid JSON"),
    ],
)  # fmt: skip
async def test_a_frame_that_is_no_protocol_message_closes_with_4400(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture, frame: str, reason: str
) -> None:
    async with socket_to(gateway) as socket:
        await socket.send(frame)
        closed = await close_frame(socket)
    assert (closed.code, closed.reason) == (4400, reason)
    assert warnings_and_errors(caplog) == []


async def test_a_close_reason_is_cut_to_fit_its_frame(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A close frame holds 123 bytes of reason; Strawberry's reasons could be longer (an id of
    # any length in "Subscriber for <id> already exists"), which the client took for a
    # protocol error.
    long_id = "é" * 200
    async with socket_to(gateway) as socket:
        job = {"query": 'subscription { jobUpdates(id: "ab12", intervalSeconds: 60) { id } }'}
        await socket.send(subscribe(job, id=long_id))
        await socket.send(subscribe(job, id=long_id))
        closed = await close_frame(socket)
    # 15 bytes of "Subscriber for ", then as many 2-byte characters as fit in 123 bytes.
    assert (closed.code, closed.reason) == (4409, "Subscriber for " + "é" * 54)
    assert warnings_and_errors(caplog) == []


async def test_a_frame_over_the_body_limit_closes_with_1009(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's default was 16 MiB, sixteen times an HTTP body.
    with start_gateway(max_body_bytes=1024) as gateway:
        async with socket_to(gateway) as socket:
            await socket.send(
                subscribe({"query": "{ __typename }", "variables": {"x": "y" * 1024}})
            )
            closed = await close_frame(socket)
    assert closed.code == 1009
    assert warnings_and_errors(caplog) == []


async def test_a_frame_before_connection_init(gateway: GatewayServer) -> None:
    async with socket_to(gateway, init=False) as socket:
        await socket.send("[]")
        closed = await close_frame(socket)
    assert (closed.code, closed.reason) == (
        4400,
        "Expected a message to be a JSON object, received an array.",
    )


async def test_a_null_connection_init_payload_is_acknowledged(gateway: GatewayServer) -> None:
    # The protocol allows it; Strawberry closed the socket (4400) for it.
    async with socket_to(gateway, init=False) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": None}))
        assert json.loads(await receive(socket)) == {"type": "connection_ack"}


async def test_the_legacy_graphql_ws_protocol_is_refused(gateway: GatewayServer) -> None:
    async with socket_to(gateway, init=False, protocol="graphql-ws") as socket:
        closed = await close_frame(socket)
    assert (closed.code, closed.reason) == (4406, "Subprotocol not acceptable")


async def next_message_or_close(socket: ClientConnection) -> Close | None:
    """None after a message; the close frame when the socket closes instead."""
    try:
        await receive(socket)
    except ConnectionClosed as closed:
        close = closed.rcvd
    else:
        return None
    assert close is not None, "The socket was dropped without a close frame."
    return close


# --- operations that fail before they run: an `error` message, the socket stays -----------------


async def test_a_syntax_error_is_an_error_message_and_the_socket_stays(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    # It used to end in a bare `complete` and an ERROR traceback in the log.
    async with socket_to(gateway) as socket:
        failed = await operation(socket, {"query": "subscription {"})
        served = await operation(socket, {"query": "{ __typename }"}, id="2")
    assert failed == [
        {
            "id": "1",
            "type": "error",
            "payload": [
                {
                    "message": "Syntax Error: Expected Name, found <EOF>.",
                    "locations": [{"line": 1, "column": 15}],
                    "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
                }
            ],
        }
    ]
    assert served == [
        {"id": "2", "type": "next", "payload": {"data": {"__typename": "Query"}}},
        {"id": "2", "type": "complete"},
    ]
    assert warnings_and_errors(caplog) == []


async def test_a_long_document_that_does_not_parse_is_an_error_message(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Long documents are parsed in a worker thread (gateway.api.documents): the same answer.
    query = "{ " + "__typename " * 600
    async with socket_to(gateway) as socket:
        failed = await operation(socket, {"query": query})
    [message] = failed
    assert message["type"] == "error"
    assert [error["extensions"] for error in message["payload"]] == [
        {"code": "GRAPHQL_PARSE_FAILED"}
    ]
    assert message["payload"][0]["message"] == "Syntax Error: Expected Name, found <EOF>."
    assert warnings_and_errors(caplog) == []


async def test_a_query_over_the_token_limit_is_an_error_message(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with start_gateway(max_tokens=5) as gateway:
        async with socket_to(gateway) as socket:
            failed = await operation(socket, {"query": "{ a b c d e f }"})
    assert failed == [
        {
            "id": "1",
            "type": "error",
            "payload": [
                {
                    "message": "Syntax Error: Document contains more than 5 tokens. "
                    "Parsing aborted.",
                    "locations": [{"line": 1, "column": 11}],
                    "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
                }
            ],
        }
    ]
    assert warnings_and_errors(caplog) == []


UPDATES = "subscription($id: ID!) { jobUpdates(id: $id) { id } }"
#: json.dumps writes NaN and Infinity as JavaScript does: what a client's bug sends.
INTERVAL = (
    'subscription($interval: Float!) { jobUpdates(id: "ab", intervalSeconds: $interval) { id } }'
)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": UPDATES, "variables": {"id": {"not": "an id"}}}, "BAD_USER_INPUT"),
        ({"query": UPDATES}, "BAD_USER_INPUT"),
        ({"query": "subscription {"}, "GRAPHQL_PARSE_FAILED"),
        # Strawberry closed the socket for these (4400), or masked them as INTERNAL_ERROR.
        ({"query": "{ __typename }", "operationName": "Missing"}, "UNKNOWN_OPERATION_NAME"),
        ({"query": ""}, "BAD_REQUEST"),
        # The first operation used to run.
        ({"query": "query A { __typename } query B { __typename }"}, "OPERATION_NAME_REQUIRED"),
        ({"query": INTERVAL, "variables": {"interval": float("nan")}}, "BAD_USER_INPUT"),
        ({"query": INTERVAL, "variables": {"interval": float("inf")}}, "BAD_USER_INPUT"),
        ({"query": 'subscription { jobUpdates(id: "ab") { id } __typename }'},
         "GRAPHQL_VALIDATION_FAILED"),
    ],
    ids=[
        "validation", "variable", "missing-variable", "syntax", "operation-name", "no-query",
        "two-operations", "nan", "infinity", "two-root-fields",
    ],
)  # fmt: skip
async def test_an_operation_failing_before_it_runs_gets_one_coded_error(
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    payload: dict[str, Any],
    code: str,
) -> None:
    async with socket_to(gateway) as socket:
        messages = await operation(socket, payload)
        # Still open: another operation is served.
        served = await operation(socket, {"query": "{ __typename }"}, id="2")
    [error_message] = messages
    assert error_message["type"] == "error"
    # One error, or several of one code (two root fields also break the introspection rule).
    assert {error["extensions"]["code"] for error in error_message["payload"]} == {code}
    assert served[-1] == {"id": "2", "type": "complete"}
    assert warnings_and_errors(caplog) == []


@pytest.mark.parametrize("variables", [{"id": {"not": "an id"}}, {}], ids=["invalid", "missing"])
async def test_a_query_with_bad_variables_answers_as_over_http(
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    variables: dict[str, Any],
) -> None:
    # A query's variables are checked as it executes: its result holds the errors (`next`),
    # then it completes, as graphql-ws's reference server answers too.
    payload = {"query": JOB, "variables": variables}
    async with socket_to(gateway) as socket:
        messages = await operation(socket, payload)
    over_http = answer(await http.post(gateway.graphql_url, json=payload))
    assert messages == [
        {"id": "1", "type": "next", "payload": over_http},
        {"id": "1", "type": "complete"},
    ]
    assert [error["extensions"]["code"] for error in over_http["errors"]] == ["BAD_USER_INPUT"]
    assert warnings_and_errors(caplog) == []


async def test_operations_beyond_the_connection_limit_get_a_coded_error(
    simulator: SimulatorServer, gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = "5ab5c1de00000000000000000000c0de"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = f'subscription {{ jobUpdates(id: "{job_id}", intervalSeconds: 60) {{ id }} }}'
    async with socket_to(gateway) as socket:
        for number in range(100):
            await socket.send(subscribe({"query": query}, id=str(number)))
        for _ in range(100):
            assert json.loads(await receive(socket))["type"] == "next"
        refused = await operation(socket, {"query": "{ __typename }"}, id="one more")
    assert refused == [
        {
            "id": "one more",
            "type": "error",
            "payload": [
                {
                    "message": "Expected at most 100 operations in progress on one connection, "
                    "received one more; complete one first.",
                    "extensions": {"code": "TOO_MANY_OPERATIONS", "limit": 100},
                }
            ],
        }
    ]
    assert warnings_and_errors(caplog) == []


# --- clients that leave --------------------------------------------------------------------------


async def test_a_client_that_leaves_mid_subscription(
    simulator: SimulatorServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = "5ab5c1de00000000000000000000dead"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = f'subscription {{ jobUpdates(id: "{job_id}", intervalSeconds: 0.5) {{ id state }} }}'
    with start_gateway(cache_running_ttl=0.1) as gateway:
        for _ in range(5):
            async with socket_to(gateway) as socket:
                for number in range(5):
                    await socket.send(subscribe({"query": query}, id=str(number)))
                await receive(socket)
                # Gone without a close frame, while its operations poll and answer.
                socket.transport.abort()
        await asyncio.sleep(1.5)
        # Still serving.
        async with socket_to(gateway) as socket:
            served = await operation(socket, {"query": "{ __typename }"})
    assert served[-1] == {"id": "1", "type": "complete"}
    assert warnings_and_errors(caplog) == []


async def test_a_malformed_frame_while_operations_answer(
    simulator: SimulatorServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # The socket closes (4400) while operations may be sending: they end quietly.
    job_id = "5ab5c1de00000000000000000000beef"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = f'subscription {{ jobUpdates(id: "{job_id}", intervalSeconds: 0.5) {{ id state }} }}'
    with start_gateway(cache_running_ttl=0.1) as gateway:
        for _ in range(5):
            async with socket_to(gateway) as socket:
                for number in range(20):
                    await socket.send(subscribe({"query": query}, id=str(number)))
                await socket.send("[]")
                while (reason := await next_message_or_close(socket)) is None:
                    pass
                assert reason.code == 4400
    assert warnings_and_errors(caplog) == []


async def test_a_bug_closes_the_socket_with_1011_and_a_correlation_id(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Served without its lifespan, the app has no services: making a context fails, a bug as
    # far as the WebSocket is concerned. It used to drop the socket (1006, no close frame).
    app = create_app(gateway_settings(simulator))
    with run_asgi_server(app, lifespan="off") as url:
        gateway = GatewayServer(url=url, settings=gateway_settings(simulator))
        async with socket_to(gateway, init=False) as socket:
            closed = await close_frame(socket)
    assert closed.code == 1011
    match = re.fullmatch(r"Unexpected error \(correlation id ([0-9a-f]{32})\)\.", closed.reason)
    assert match is not None, closed.reason
    [logged] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert logged.getMessage() == (
        f"Unexpected error on a WebSocket (correlation id {match.group(1)})"
    )
    assert logged.exc_info is not None
