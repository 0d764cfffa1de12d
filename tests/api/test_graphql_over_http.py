"""GraphQL over HTTP as /graphql answers it (`gateway.api.http`): media types, statuses without
`data` for requests that fail before execution, the operations each method runs, and a coded
JSON answer (never text, never 5xx) for whatever a client sends. A real gateway on a real port
in front of the real simulator."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from gateway.api.http import accepts_json, response_media_type
from tests.api.conftest import GatewayServer, StartGateway, answer
from tests.servers import SimulatorServer

NEW = "application/graphql-response+json"
LEGACY = "application/json"
SUBSCRIPTION = 'subscription { jobUpdates(id: "88c6ca184c0e432bbf5b665e2a15d0c1") { id } }'
#: What urql's fetch exchange sends on every request, SSE included.
URQL_ACCEPT = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, LEGACY),
        ("", LEGACY),
        ("*/*", LEGACY),
        ("application/*", LEGACY),
        (LEGACY, LEGACY),
        (NEW, NEW),
        (f"{NEW}, {LEGACY};q=0.9", NEW),  # Apollo Client 4, graphql-http
        (f"{NEW},{LEGACY}", NEW),
        (URQL_ACCEPT, NEW),
        (f"{LEGACY}, {NEW};q=0.5", LEGACY),
        (f"{NEW};q=0, {LEGACY}", LEGACY),
        (f"{NEW};q=oops", LEGACY),
        ("text/html", LEGACY),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", NEW),
    ],
)
def test_the_media_type_follows_accept(accept: str | None, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, True),
        ("*/*", True),
        ("application/*", True),
        (URQL_ACCEPT, True),
        ("text/event-stream", False),
        (f"text/event-stream, {LEGACY};q=0", False),
        (f"{LEGACY};q=0, */*", True),
        (f"{NEW};q=0.1", True),
    ],
)
def test_what_accepts_a_json_answer(accept: str | None, expected: bool) -> None:
    assert accepts_json(accept) is expected


async def post(
    http: httpx.AsyncClient,
    gateway: GatewayServer,
    body: dict[str, Any],
    accept: str | None = None,
) -> httpx.Response:
    headers = {} if accept is None else {"accept": accept}
    return await http.post(gateway.graphql_url, json=body, headers=headers)


def assert_answer(
    response: httpx.Response, status: int, media_type: str, body: dict[str, Any]
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == media_type
    assert answer(response) == body


def parse_error(column: int, message: str) -> dict[str, Any]:
    return {
        "message": f"Syntax Error: {message}",
        "locations": [{"line": 1, "column": column}],
        "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
    }


async def test_a_query_is_answered_in_the_media_type_asked_for(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    for accept, media_type in [(NEW, NEW), (LEGACY, LEGACY), ("*/*", LEGACY), (None, LEGACY)]:
        response = await post(http, gateway, {"query": "{ __typename }"}, accept)
        assert_answer(response, 200, media_type, {"data": {"__typename": "Query"}})


async def test_a_document_that_does_not_parse_is_400_without_data_for_new_clients(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    request = {"query": "{"}
    error = parse_error(2, "Expected Name, found <EOF>.")
    assert_answer(await post(http, gateway, request, NEW), 400, NEW, {"errors": [error]})
    # The legacy rules: 200, data null.
    for accept in (LEGACY, "*/*", None):
        response = await post(http, gateway, request, accept)
        assert_answer(response, 200, LEGACY, {"data": None, "errors": [error]})


async def test_validation_and_variable_failures_are_400_without_data_for_new_clients(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    invalid = await post(http, gateway, {"query": "{ nope }"}, NEW)
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == NEW
    assert "data" not in invalid.json()
    assert [e["extensions"]["code"] for e in invalid.json()["errors"]] == [
        "GRAPHQL_VALIDATION_FAILED"
    ]
    query = "query Job($id: ID!) { job(id: $id) { id } }"
    uncoerced = await post(http, gateway, {"query": query, "variables": {"id": [1]}}, NEW)
    assert uncoerced.status_code == 400
    assert "data" not in uncoerced.json()
    assert [e["extensions"]["code"] for e in uncoerced.json()["errors"]] == ["BAD_USER_INPUT"]
    legacy = await post(http, gateway, {"query": query, "variables": {"id": [1]}}, LEGACY)
    assert legacy.status_code == 200
    assert legacy.json()["data"] is None


async def test_an_operation_too_costly_is_400_without_data_for_new_clients(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    query = '{ jobs(ids: ["a1", "a2", "a3"]) { id } }'
    with start_gateway(max_cost=10) as gateway:
        response = await post(http, gateway, {"query": query}, NEW)
    assert response.status_code == 400
    assert "data" not in response.json()
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["QUERY_TOO_COMPLEX"]


async def test_field_errors_keep_data_and_200_for_new_clients(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    known = simulator.demo_ids()[0]
    query = f'{{ good: job(id: "{known}") {{ id }} bad: job(id: "not an id") {{ id }} }}'
    response = await post(http, gateway, {"query": query}, NEW)
    assert response.status_code == 200
    assert response.headers["content-type"] == NEW
    body = response.json()
    assert body["data"] == {"good": {"id": known}, "bad": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_JOB_ID"]


@pytest.mark.parametrize("accept", [None, NEW, LEGACY, "*/*"])
async def test_a_subscription_over_plain_http_is_refused_with_a_code(
    simulator: SimulatorServer,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    accept: str | None,
) -> None:
    # It used to answer 200 {"data": {"jobUpdates": null}}, which reads as "no such job".
    simulator.reset_stats()
    headers = {} if accept is None else {"accept": accept}
    over_post = await http.post(gateway.graphql_url, json={"query": SUBSCRIPTION}, headers=headers)
    over_get = await http.get(gateway.graphql_url, params={"query": SUBSCRIPTION}, headers=headers)
    for response, method in [(over_post, "POST"), (over_get, "GET")]:
        media_type = response_media_type(accept)
        message = (
            "Expected a subscription over WebSocket (graphql-transport-ws at this URL) or "
            "Server-Sent Events (graphql-sse: this request with Accept: text/event-stream), "
            f"received one over plain HTTP {method}, which can answer only one result."
        )
        assert_answer(
            response,
            400,
            media_type,
            {
                "errors": [
                    {"message": message, "extensions": {"code": "SUBSCRIPTION_TRANSPORT_REQUIRED"}}
                ]
            },
        )
    assert simulator.query_stats()["calls"] == 0


async def test_a_mutation_over_get_is_405_with_allow_post(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.get(gateway.graphql_url, params={"query": "mutation { __typename }"})
    message = "Expected a mutation over POST, received one over GET (GET must not change anything)."
    assert_answer(
        response,
        405,
        LEGACY,
        {"errors": [{"message": message, "extensions": {"code": "METHOD_NOT_ALLOWED"}}]},
    )
    assert response.headers["allow"] == "POST"


TWO_OPERATIONS = "query A { a: __typename } query B { b: __typename }"


async def test_a_subscription_from_a_client_that_accepts_sse_too_is_streamed(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # urql accepts JSON and SSE on every request: its subscription gets the stream (its
    # queries JSON, as above).
    response = await http.post(
        gateway.graphql_url, json={"query": SUBSCRIPTION}, headers={"accept": URQL_ACCEPT}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: complete" in response.text


@pytest.mark.parametrize("accept", [None, NEW])
async def test_several_operations_need_an_operation_name(
    gateway: GatewayServer, http: httpx.AsyncClient, accept: str | None
) -> None:
    # The first operation used to run.
    response = await post(http, gateway, {"query": TWO_OPERATIONS}, accept)
    message = (
        "Expected an operationName naming one of the document's 2 operations (A, B), received none."
    )
    error = {
        "message": message,
        "extensions": {"code": "OPERATION_NAME_REQUIRED", "operations": ["A", "B"]},
    }
    assert_answer(response, 400, response_media_type(accept), {"errors": [error]})
    named = await post(http, gateway, {"query": TWO_OPERATIONS, "operationName": "B"}, accept)
    assert_answer(named, 200, response_media_type(accept), {"data": {"b": "Query"}})


@pytest.mark.parametrize("accept", [None, NEW])
async def test_an_unknown_operation_name_is_400(
    gateway: GatewayServer, http: httpx.AsyncClient, accept: str | None
) -> None:
    response = await post(http, gateway, {"query": TWO_OPERATIONS, "operationName": "C"}, accept)
    message = (
        "Expected an operationName naming an operation of the document, one of A, B; received 'C'."
    )
    error = {
        "message": message,
        "extensions": {"code": "UNKNOWN_OPERATION_NAME", "operationName": "C"},
    }
    assert_answer(response, 400, response_media_type(accept), {"errors": [error]})


async def test_an_operation_name_that_is_no_string_is_a_bad_request(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await post(http, gateway, {"query": "{ __typename }", "operationName": 7})
    message = (
        "Expected the GraphQL request's `operationName` to be a string or null, received a number."
    )
    assert_answer(
        response,
        400,
        LEGACY,
        {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]},
    )


@pytest.mark.parametrize(
    ("content_type", "received"),
    [
        (None, "no Content-Type"),
        ("text/plain", "Content-Type text/plain"),
        ("application/graphql", "Content-Type application/graphql"),
        ("application/x-www-form-urlencoded", "Content-Type application/x-www-form-urlencoded"),
        (
            "application/json; charset=iso-8859-1",
            "Content-Type application/json in charset iso-8859-1",
        ),
    ],
)
async def test_a_body_that_is_not_json_in_utf8_is_415(
    gateway: GatewayServer, http: httpx.AsyncClient, content_type: str | None, received: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await http.post(
        gateway.graphql_url, content=b'{"query": "{ __typename }"}', headers=headers
    )
    message = f"Expected a body of Content-Type application/json (UTF-8), received {received}."
    assert_answer(
        response,
        415,
        LEGACY,
        {"errors": [{"message": message, "extensions": {"code": "UNSUPPORTED_MEDIA_TYPE"}}]},
    )


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/json;charset=UTF-8"]
)
async def test_json_in_utf8_with_its_charset_is_served(
    gateway: GatewayServer, http: httpx.AsyncClient, content_type: str
) -> None:
    response = await http.post(
        gateway.graphql_url,
        content=b'{"query": "{ __typename }"}',
        headers={"content-type": content_type},
    )
    assert_answer(response, 200, LEGACY, {"data": {"__typename": "Query"}})


# --- whatever a client sends --------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
ACCEPTS = [None, NEW, "text/html", "text/event-stream", "image/png;q=oops,,"]
CONTENT_TYPES = [None, "application/json", "text/plain", "multipart/form-data; boundary=x"]
BODIES = [b"", b"{", b"[]", b'{"query": "{"}', b'{"query": "subscription { x }"}', b"\xff\xfe"]


@pytest.mark.slow
async def test_every_odd_request_gets_a_coded_json_answer_never_text_or_5xx(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # The combinations a fuzzer found text/plain answers among, and more.
    odd = []
    for method, accept, content_type, body in itertools.product(
        METHODS, ACCEPTS, CONTENT_TYPES, BODIES
    ):
        headers = {
            key: value
            for key, value in [("accept", accept), ("content-type", content_type)]
            if value is not None
        }
        response = await http.request(method, gateway.graphql_url, content=body, headers=headers)
        if response.status_code < 400 or method == "HEAD":
            continue  # served (GraphiQL, a query), or a HEAD answer that has no body
        refused = (
            response.status_code < 500
            and response.headers["content-type"] in (LEGACY, NEW)
            and all("code" in error["extensions"] for error in response.json()["errors"])
        )
        if not refused:
            odd.append(
                (method, accept, content_type, body, response.status_code, response.text[:200])
            )
    assert odd == []
