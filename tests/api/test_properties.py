"""Properties of the gateway against anything a client may send: random bodies, content types,
methods and WebSocket frames never get a 5xx, a dropped socket or an error in the log, and the
gateway keeps answering afterwards. One real gateway per test, real sockets, sync clients (the
gateway runs in its own thread)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.api.conftest import GatewayServer
from tests.logs import CLIENT_LOGGERS
from tests.rawhttp import PATIENCE

pytestmark = pytest.mark.slow

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    # One gateway serves every example of a test, on purpose: it must survive them all.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

QUERIES = [
    "{ __typename }",
    "query($id: ID!) { job(id: $id) { id state } }",
    "query($ids: [ID!]!) { jobs(ids: $ids) { id } }",
    'subscription { jobUpdates(id: "a1b2c3", intervalSeconds: 60) { id } }',
    "subscription($id: ID!) { jobUpdates(id: $id) { id } }",
    "{ job(id: ",
    "{ nope }",
    "mutation { x }",
    "query A { __typename } query B { __typename }",
    "{" * 200,
    "",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
nested = st.integers(1, 200).map(lambda depth: "[" * depth + "]" * depth)
graphql_requests = st.fixed_dictionaries(
    {"query": st.sampled_from(QUERIES) | json_values},
    optional={
        "variables": json_values | st.fixed_dictionaries({"id": json_values}),
        "operationName": st.sampled_from(["A", "B"]) | json_values,
        "extensions": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    graphql_requests.map(lambda value: json.dumps(value).encode()),
    nested.map(str.encode),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/graphql",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "",
    ]
) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
methods = st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
parameters = st.dictionaries(
    st.sampled_from(["query", "variables", "operationName", "extensions"]),
    st.sampled_from(QUERIES) | json_values.map(json.dumps) | st.text(max_size=30) | nested,
    max_size=4,
)


def assert_still_serving(gateway: GatewayServer) -> None:
    response = httpx.post(gateway.graphql_url, json={"query": "{ __typename }"}, timeout=PATIENCE)
    assert response.json() == {"data": {"__typename": "Query"}}


def assert_nothing_loud(caplog: pytest.LogCaptureFixture) -> None:
    loud = [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in caplog.records
        if (record.levelno >= logging.ERROR or record.exc_info)
        and not record.name.startswith(CLIENT_LOGGERS)
    ]
    assert loud == []


def assert_answered(response: httpx.Response) -> None:
    """A GraphQL answer (or GraphiQL's page); an error is 4xx with one coded error."""
    assert response.status_code < 500, response.text
    if response.headers.get("content-type", "").startswith("text/html"):
        assert response.status_code == 200  # GraphiQL
        return
    body = response.json()
    if response.status_code >= 400:
        [error] = body["errors"]
        assert isinstance(error["message"], str)
        assert isinstance(error["extensions"]["code"], str)
    else:
        assert set(body) <= {"data", "errors", "extensions"}


@PROPERTIES
@given(method=methods, content_type=content_types, body=bodies, params=parameters)
def test_no_http_request_gets_a_5xx(
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    method: str,
    content_type: str,
    body: bytes,
    params: dict[str, str],
) -> None:
    response = httpx.request(
        method,
        gateway.graphql_url,
        params=params,
        content=body if method != "GET" else None,
        headers={"content-type": content_type, "accept": "application/json"},
        timeout=PATIENCE,
    )
    assert_answered(response)
    assert_still_serving(gateway)
    assert_nothing_loud(caplog)


@PROPERTIES
@given(accept=st.sampled_from(["text/html", "*/*", ""]), params=parameters)
def test_no_get_request_gets_a_5xx(
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    accept: str,
    params: dict[str, str],
) -> None:
    response = httpx.get(
        gateway.graphql_url, params=params, headers={"accept": accept}, timeout=PATIENCE
    )
    assert_answered(response)
    assert_nothing_loud(caplog)


MESSAGE_TYPES = ["connection_init", "ping", "pong", "subscribe", "complete", "next", "error"]
payloads = json_values | graphql_requests
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES) | json_values},
    optional={
        "id": st.sampled_from(["1", "2"]) | json_values,
        "payload": payloads,
    },
)
frames = st.one_of(
    messages.map(json.dumps),
    json_values.map(json.dumps),
    nested,
    st.text(max_size=40),
    st.binary(max_size=40),
)
#: What the protocol closes with for a client's frames: a malformed one, subscribe before
#: connection_init, an id in use, a second connection_init.
PROTOCOL_CLOSE_CODES = {4400, 4401, 4409, 4429}


def ping_until_answered(socket: ClientConnection) -> int | None:
    """Pings; None once the pong arrives (the socket still serves), or the code it was closed
    with (after a close frame: never a dropped connection)."""
    try:
        socket.send(json.dumps({"type": "ping"}))
        while True:
            message = socket.recv(timeout=PATIENCE)
            if isinstance(message, str) and json.loads(message) == {"type": "pong"}:
                return None
    except ConnectionClosed as closed:
        close = closed.rcvd
    assert close is not None, "The socket was dropped without a close frame."
    return close.code


@PROPERTIES
@given(initialised=st.booleans(), sent=st.lists(frames, min_size=1, max_size=3))
def test_no_websocket_frame_drops_the_socket(
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    initialised: bool,
    sent: list[Any],
) -> None:
    url = gateway.graphql_url.replace("http://", "ws://")
    with connect(url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        if initialised:
            socket.send(json.dumps({"type": "connection_init"}))
            assert json.loads(socket.recv(timeout=PATIENCE)) == {"type": "connection_ack"}
        for frame in sent:
            try:
                socket.send(frame)
            except ConnectionClosed:
                break  # closed by an earlier frame: ping_until_answered checks how
        code = ping_until_answered(socket)
    assert code is None or code in PROTOCOL_CLOSE_CODES
    assert_still_serving(gateway)
    assert_nothing_loud(caplog)
