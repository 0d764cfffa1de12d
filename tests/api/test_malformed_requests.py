"""HTTP requests the gateway cannot read are answered 4xx with a coded GraphQL error, never 5xx,
and leave nothing above DEBUG in the log: a real gateway on a real port, real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from gateway.api.client_json import MAX_DEPTH
from tests.api.conftest import GatewayServer, StartGateway, answer, graphql
from tests.logs import warnings_and_errors
from tests.rawhttp import PATIENCE, raw_connection, request_head
from tests.servers import SimulatorServer

QUERY = "{ __typename }"


def refusal(message: str, code: str = "BAD_REQUEST") -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


async def post(
    http: httpx.AsyncClient,
    gateway: GatewayServer,
    body: bytes,
    content_type: str = "application/json",
) -> httpx.Response:
    return await http.post(
        gateway.graphql_url, content=body, headers={"content-type": content_type}
    )


def assert_refused(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert answer(response) == body


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"null", "null"), (b'"{ __typename }"', "a string"), (b"1", "a number"),
     (b"true", "a boolean")],
)  # fmt: skip
async def test_a_body_that_is_no_json_object(
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    kind: str,
) -> None:
    # It used to be a 500 with an AttributeError traceback (Strawberry read it with `.get`).
    response = await post(http, gateway, body)
    assert_refused(response, 400, refusal(f"Expected a JSON object, received {kind}."))
    assert warnings_and_errors(caplog) == []


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"[" * 30_000 + b"]" * 30_000, 30_000),
        (
            b'{"query": "{ __typename }", "variables": {"v": '
            + b'{"a": ' * 3_000
            + b"1"
            + b"}" * 3_000
            + b"}}",
            3_002,
        ),
        # Never closed: the decoder would recurse as deep before it found out.
        (b'{"query": "{ __typename }", "variables": ' + b"[" * 5_000, 5_001),
    ],
    ids=["body", "variables", "unclosed"],
)
async def test_json_nested_too_deep(
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    depth: int,
) -> None:
    # It used to be a 500 with a RecursionError traceback.
    response = await post(http, gateway, body)
    message = f"Expected JSON nested at most {MAX_DEPTH} levels deep, received {depth} levels."
    assert_refused(response, 400, refusal(message))
    assert warnings_and_errors(caplog) == []


async def test_json_nested_to_the_limit_is_served(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # The request object and the variables object take two levels of the limit.
    deep = json.loads("[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2))
    body = await graphql(http, gateway, QUERY, {"unused": deep})
    assert body == {"data": {"__typename": "Query"}}


async def test_brackets_inside_strings_do_not_count(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = await graphql(http, gateway, QUERY, {"text": "[{" * 1_000 + '\\"]'})
    assert body == {"data": {"__typename": "Query"}}


async def test_a_body_that_is_not_utf8(
    gateway: GatewayServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # json.loads took these bytes for UTF-16 and raised UnicodeDecodeError: a 500.
    response = await post(http, gateway, b'\xff\xfe{"query": "{ __typename }"}')
    message = "Expected UTF-8 text, received byte 0xff at position 0, which is not UTF-8."
    assert_refused(response, 400, refusal(message))
    assert warnings_and_errors(caplog) == []


async def test_a_number_too_long_to_convert(
    gateway: GatewayServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Python refuses to convert integers of over 4,300 digits, with a bare ValueError.
    body = b'{"query": "{ __typename }", "variables": {"n": ' + b"7" * 5_000 + b"}}"
    response = await post(http, gateway, body)
    assert_refused(
        response,
        400,
        refusal("Expected JSON numbers of at most 4300 digits, received a longer one."),
    )
    assert warnings_and_errors(caplog) == []


async def test_text_that_is_not_json(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    response = await post(http, gateway, b"{query: 1}")
    message = (
        "Expected JSON, received text that does not parse: Expecting property name enclosed in "
        "double quotes at line 1, column 2."
    )
    assert_refused(response, 400, refusal(message))


async def test_strawberry_refusals_are_coded_errors(
    gateway: GatewayServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # They used to be plain text, then 400 BAD_REQUEST for an unsupported content type.
    response = await post(http, gateway, b"query=x", "text/plain")
    assert_refused(
        response,
        415,
        refusal(
            "Expected a body of Content-Type application/json (UTF-8), received Content-Type "
            "text/plain.",
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    )
    assert response.headers["accept-post"] == "application/json"
    assert_refused(
        await post(http, gateway, b'{"query": 1}'),
        400,
        refusal("The GraphQL operation's `query` must be a string or null, if provided."),
    )
    assert_refused(
        await post(http, gateway, b"[]"),
        400,
        refusal(
            "Expected one GraphQL request (a JSON object), received a batch (a JSON array): the "
            "gateway answers one operation per request; send each on its own, or list the jobs "
            "of several in one jobs(ids:)."
        ),
    )
    response = await http.put(gateway.graphql_url, json={"query": QUERY})
    assert_refused(
        response,
        405,
        refusal("Expected GET or POST, received PUT.", "METHOD_NOT_ALLOWED"),
    )
    assert response.headers["allow"] == "GET, POST"
    assert warnings_and_errors(caplog) == []


async def test_get_variables_are_decoded_with_the_same_limits(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    params = {"query": QUERY, "variables": "[" * 100 + "]" * 100}
    response = await http.get(gateway.graphql_url, params=params)
    message = f"Expected JSON nested at most {MAX_DEPTH} levels deep, received 100 levels."
    assert_refused(response, 400, refusal(message))
    response = await http.get(gateway.graphql_url, params={"query": QUERY, "variables": "7"})
    assert_refused(response, 400, refusal("Expected a JSON object, received a number."))


async def test_graphiql_turned_off(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    with start_gateway(graphiql=False) as gateway:
        response = await http.get(gateway.graphql_url, headers={"accept": "text/html"})
    assert_refused(response, 404, refusal("Not Found", "NOT_FOUND"))


# --- clients that leave -------------------------------------------------------------------------


async def send_and_leave(gateway: GatewayServer, data: bytes) -> None:
    async with raw_connection(gateway.url) as (_, writer):
        writer.write(data)
        await writer.drain()


def count_departures(caplog: pytest.LogCaptureFixture) -> int:
    message = "HTTP client left before its request body arrived"
    return sum(record.getMessage() == message for record in caplog.records)


async def test_a_client_that_leaves_before_its_body_arrived(
    gateway: GatewayServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Each one used to log an ERROR with a ClientDisconnect traceback.
    head = request_head("POST", "/graphql", content_type="application/json", content_length=100)
    for _ in range(20):
        await send_and_leave(gateway, head + b'{"query": ')
    # Still serving; and each departure was noticed (a DEBUG line), none logged louder.
    assert await graphql(http, gateway, QUERY) == {"data": {"__typename": "Query"}}
    for _ in range(int(PATIENCE / 0.05)):  # the server notices each on its own thread
        if count_departures(caplog) == 20:
            break
        await asyncio.sleep(0.05)
    assert count_departures(caplog) == 20
    assert warnings_and_errors(caplog) == []


async def test_a_client_that_leaves_before_its_answer(
    simulator: SimulatorServer,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    simulator.set_faults(latencyMs=300)
    body = json.dumps({"query": '{ job(id: "a1b2c3") { id } }'}).encode()
    head = request_head(
        "POST", "/graphql", content_type="application/json", content_length=len(body)
    )
    for _ in range(10):
        await send_and_leave(gateway, head + body)
    await asyncio.sleep(1.0)  # the upstream answers meanwhile: the answers go nowhere
    simulator.set_faults(latencyMs=0)
    assert await graphql(http, gateway, QUERY) == {"data": {"__typename": "Query"}}
    assert warnings_and_errors(caplog) == []
