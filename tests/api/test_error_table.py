"""The README's error table, walked over HTTP: each code it documents is provoked on a real
gateway (in front of the real simulator, or of a stub cloud for an answer the simulator never
gives) and comes back as a coded GraphQL error, with the request's id, never a 5xx.

To add a row to the table, add its provocation to `OVER_HTTP` (or, for a code HTTP cannot meet,
the test that proves it to `ELSEWHERE`): `test_every_row_of_the_table_is_walked` fails until
then. `tests/api/error_table.py` has the table reader, for walks over other transports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admission import TIMEOUT_HEADER
from gateway.callers.api_keys import key_hash, new_key
from gateway.simulator.demo import DOC_EXAMPLE_JOB_ID
from tests.api.conftest import StartGateway
from tests.api.error_table import Answer, Elsewhere, Provocation, assert_walk_covers_the_table
from tests.api.test_submit import SUBMIT, job_input
from tests.rawhttp import parse_responses, raw_connection, read_until_closed, request_head
from tests.servers import SimulatorServer, run_asgi_server


@dataclass(frozen=True)
class Walk:
    simulator: SimulatorServer
    start_gateway: StartGateway
    http: httpx.AsyncClient


def over_http(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers, response.json())


async def query(
    walk: Walk,
    text: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    **settings: Any,
) -> Answer:
    """POSTs `text` to a gateway started with `settings`."""
    with walk.start_gateway(**settings) as gateway:
        response = await walk.http.post(
            gateway.graphql_url,
            json={"query": text, "variables": variables or {}},
            headers=headers,
        )
    return over_http(response)


def job_query(walk: Walk, count: int = 1) -> tuple[str, dict[str, Any]]:
    return "query($ids: [ID!]!) { jobs(ids: $ids) { id } }", {
        "ids": walk.simulator.demo_ids()[:count]
    }


def stub_cloud(status: int, body: dict[str, Any]) -> AbstractContextManager[str]:
    """A stand-in for the cloud that answers every call with `status` and `body`."""

    async def answer(request: Request) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    return run_asgi_server(Starlette(routes=[Route("/", answer, methods=["GET", "POST"])]))


async def on_stub_cloud(walk: Walk, status: int, body: dict[str, Any]) -> Answer:
    with stub_cloud(status, body) as url:
        return await query(walk, *job_query(walk), mps_endpoint=url, max_retries=0)


async def with_faults(walk: Walk, faults: dict[str, float], **settings: Any) -> Answer:
    walk.simulator.set_faults(**faults)
    return await query(walk, *job_query(walk, 10), max_retries=0, **settings)


async def a_slow_body(walk: Walk) -> Answer:
    with walk.start_gateway(body_timeout=0.3) as gateway:
        async with raw_connection(gateway.url) as (reader, writer):
            head = request_head(
                "POST", "/graphql", content_type="application/json", content_length=100
            )
            writer.write(head + b'{"query"')
            await writer.drain()
            [response] = parse_responses(await read_until_closed(reader))
    return Answer(response.status, response.headers, response.json())


async def request(
    walk: Walk, method: str, *, settings: dict[str, Any] | None = None, **kwargs: Any
) -> Answer:
    with walk.start_gateway(**(settings or {})) as gateway:
        return over_http(await walk.http.request(method, gateway.graphql_url, **kwargs))


KNOWN_WITH_FILES = DOC_EXAMPLE_JOB_ID
TYPENAME = "{ __typename }"


def persisted(document: str = TYPENAME, sha256_hash: str | None = None) -> dict[str, Any]:
    digest = sha256_hash or hashlib.sha256(document.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def posted(walk: Walk, body: dict[str, Any], **settings: Any) -> Answer:
    return await request(walk, "POST", json=body, settings=settings)


async def trusted(walk: Walk, body: dict[str, Any]) -> Answer:
    """POSTs `body` to a gateway that runs only `{ __typename }` (trusted documents)."""
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "manifest.json"
        manifest.write_text(json.dumps({hashlib.sha256(TYPENAME.encode()).hexdigest(): TYPENAME}))
        return await posted(walk, body, trusted_documents=manifest)


async def with_api_key(walk: Walk, send_key: bool, count: int, **settings: Any) -> Answer:
    """POSTs `{ __typename }` `count` times to a gateway that authenticates API keys, with a
    key or without; the last answer."""
    key = new_key()
    document = {
        "keys": [
            {"name": "web", "tenant": "acme", "scopes": ["jobs:read"], "sha256": key_hash(key)}
        ]
    }
    with tempfile.TemporaryDirectory() as folder:
        keys_file = Path(folder) / "keys.json"
        keys_file.write_text(json.dumps(document))
        with walk.start_gateway(
            auth="api-key", api_keys_file=str(keys_file), **settings
        ) as gateway:
            headers = {"x-api-key": key} if send_key else {}
            for _ in range(count):
                response = await walk.http.post(
                    gateway.graphql_url, json={"query": TYPENAME}, headers=headers
                )
    return over_http(response)


async def submitted_twice_with_one_key(walk: Walk) -> Answer:
    key = uuid.uuid4().hex
    with walk.start_gateway() as gateway:
        for user_data in ("order 1", "order 2"):
            variables = {"input": job_input(idempotencyKey=key, userData=user_data)}
            response = await walk.http.post(
                gateway.graphql_url, json={"query": SUBMIT, "variables": variables}
            )
    return over_http(response)


async def submitted_answer_lost(walk: Walk) -> Answer:
    walk.simulator.set_faults(dropRate=1.0)
    return await query(walk, SUBMIT, {"input": job_input()})


OVER_HTTP: dict[str, Provocation] = {
    "INVALID_JOB_ID": lambda walk: query(walk, '{ job(id: "a b") { id } }'),
    "TOO_MANY_IDS": lambda walk: query(
        walk, "query($ids: [ID!]!) { jobs(ids: $ids) { id } }", {"ids": ["a1"] * 101}
    ),
    "INVALID_ARGUMENT": lambda walk: query(
        walk,
        f'{{ job(id: "{KNOWN_WITH_FILES}") '
        "{ result { files { signedUrl(expiresInSeconds: 0) } } } }",
    ),
    "BUDGET_EXHAUSTED": lambda walk: query(
        walk, *job_query(walk, 3), headers={TIMEOUT_HEADER: "0.8"}, upstream_qps=1
    ),
    "QUERY_TOO_COMPLEX": lambda walk: query(walk, *job_query(walk, 3), max_cost=10),
    # The deadline comes while the calls are under way, however long the request took to reach
    # them (a stall as long as a short deadline made them BUDGET_EXHAUSTED instead); the test
    # waits out the upstream's 3 s all the same, when the simulator stops.
    "DEADLINE_EXCEEDED": lambda walk: with_faults(
        walk, {"latencyMs": 3000}, headers={TIMEOUT_HEADER: "2"}
    ),
    "UPSTREAM_THROTTLED": lambda walk: with_faults(walk, {"qps": 1}),
    "UPSTREAM_UNAVAILABLE": lambda walk: with_faults(walk, {"errorRate": 1.0}),
    "UPSTREAM_TIMEOUT": lambda walk: with_faults(walk, {"latencyMs": 1000}, read_timeout=0.2),
    "UPSTREAM_AUTH_FAILED": lambda walk: query(
        walk, *job_query(walk), access_key_secret="not-the-secret", max_retries=0
    ),
    "UPSTREAM_REJECTED": lambda walk: on_stub_cloud(
        walk,
        400,
        {"Code": "InvalidParameter.Unexpected", "Message": "No.", "RequestId": "STUB-1"},
    ),
    "UPSTREAM_BAD_RESPONSE": lambda walk: with_faults(walk, {"malformedRate": 1.0}),
    "GRAPHQL_PARSE_FAILED": lambda walk: query(walk, "{ job(id: "),
    "GRAPHQL_VALIDATION_FAILED": lambda walk: query(walk, "{ nope }"),
    "BAD_USER_INPUT": lambda walk: query(
        walk, "query($id: ID!) { job(id: $id) { id } }", {"id": [1]}
    ),
    "OPERATION_NAME_REQUIRED": lambda walk: query(
        walk, "query A { __typename } query B { __typename }"
    ),
    "UNKNOWN_OPERATION_NAME": lambda walk: request(
        walk, "POST", json={"query": "query A { __typename }", "operationName": "B"}
    ),
    "SUBSCRIPTION_TRANSPORT_REQUIRED": lambda walk: query(
        walk, f'subscription {{ jobUpdates(id: "{KNOWN_WITH_FILES}") {{ id }} }}'
    ),
    "BAD_REQUEST": lambda walk: request(
        walk, "POST", content=b"[]", headers={"content-type": "application/json"}
    ),
    "UNSUPPORTED_MEDIA_TYPE": lambda walk: request(
        walk, "POST", content=b"{}", headers={"content-type": "text/plain"}
    ),
    "METHOD_NOT_ALLOWED": lambda walk: request(walk, "DELETE"),
    "CORS_PREFLIGHT_REFUSED": lambda walk: request(
        walk,
        "OPTIONS",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-unheard-of",
        },
    ),
    "NOT_FOUND": lambda walk: request(
        walk, "GET", headers={"accept": "text/html"}, settings={"graphiql": False}
    ),
    "REQUEST_TIMEOUT": a_slow_body,
    "PERSISTED_QUERY_NOT_FOUND": lambda walk: posted(walk, {"extensions": persisted()}),
    "PERSISTED_QUERY_NOT_SUPPORTED": lambda walk: posted(
        walk, {"extensions": persisted()}, apq=False
    ),
    "PERSISTED_QUERY_HASH_MISMATCH": lambda walk: posted(
        walk, {"query": TYPENAME, "extensions": persisted(sha256_hash="0" * 64)}
    ),
    "PERSISTED_QUERY_INVALID": lambda walk: posted(
        walk, {"query": TYPENAME, "extensions": {"persistedQuery": {"version": 2}}}
    ),
    "PERSISTED_QUERY_NOT_IN_LIST": lambda walk: trusted(
        walk, {"extensions": persisted("{ other: __typename }")}
    ),
    "PERSISTED_QUERY_REQUIRED": lambda walk: trusted(walk, {"query": "{ other: __typename }"}),
    "IDEMPOTENCY_KEY_REUSED": submitted_twice_with_one_key,
    "SUBMIT_OUTCOME_UNKNOWN": submitted_answer_lost,
    "UNAUTHENTICATED": lambda walk: with_api_key(walk, send_key=False, count=1),
    # A burst of one, then one a minute: the second operation is over the tenant's rate.
    "RATE_LIMITED": lambda walk: with_api_key(walk, send_key=True, count=2, tenant_qps=1 / 60),
    "REQUEST_TOO_LARGE": lambda walk: request(
        walk,
        "POST",
        content=b'{"query": "' + b" " * 4096 + b'{ __typename }"}',
        headers={"content-type": "application/json"},
        settings={"max_body_bytes": 1024},
    ),
}

ELSEWHERE: dict[str, Elsewhere] = {
    "OVERLOADED": Elsewhere(
        "tests.api.test_admission::test_over_the_concurrency_limit_a_request_is_refused_while_another_runs",
        "needs a request held running while another arrives (GATEWAY_MAX_CONCURRENT_REQUESTS)",
    ),
    "SHUTTING_DOWN": Elsewhere(
        "tests.fleet.test_shutdown::test_sigterm_answers_the_waiting_requests_and_releases_everything",
        "needs SIGTERM sent to a gateway process while requests wait for the budget",
    ),
    "TOO_MANY_OPERATIONS": Elsewhere(
        "tests.api.test_websocket::test_operations_beyond_the_connection_limit_get_a_coded_error",
        "a limit of a WebSocket connection's operations",
    ),
    "FORBIDDEN": Elsewhere(
        "tests.api.test_submit::test_a_caller_without_the_submit_scope_is_forbidden",
        "no HTTP authentication yet: a caller without the scope is built in the test",
    ),
    "TOO_MANY_STREAMS": Elsewhere(
        "tests.api.test_error_table_streams::test_the_code_reaches_the_client_with_its_fields",
        "a limit of Server-Sent Event streams (HTTP 503, Retry-After): walked over SSE",
    ),
    "INTERNAL_ERROR": Elsewhere(
        "tests.api.test_errors::test_an_unexpected_error_is_masked_and_logged_with_a_correlation_id",
        "no input reaches a bug of the gateway's own resolvers: proven on a schema built to fail",
    ),
}


def test_every_row_of_the_table_is_walked() -> None:
    assert_walk_covers_the_table(OVER_HTTP, ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize("code", sorted(OVER_HTTP))
async def test_the_error_table_over_http(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient, code: str
) -> None:
    answer = await asyncio.wait_for(OVER_HTTP[code](Walk(simulator, start_gateway, http)), 60)

    assert answer.status is not None
    assert answer.status < 500, answer
    assert answer.headers["content-type"] == "application/json"
    assert code in answer.codes(), answer.body
    # Every error names the request it answers.
    request_id = answer.headers["x-request-id"]
    for error in answer.body["errors"]:
        assert error["extensions"]["requestId"] == request_id, error
