"""The README's error table, walked over WebSocket (graphql-transport-ws) and Server-Sent Events
(graphql-sse): every code it lists is either made to happen over each streaming transport on a
real gateway, arriving as `extensions.code` with the extra fields the table names, or named here
with the reason it cannot happen there. A code added to the table fails the first test until it
is placed in one or the other."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.api.conftest import GatewayServer, StartGateway
from tests.api.error_table import error_table
from tests.api.test_submit import SUBMIT, job_input
from tests.api.test_subscriptions import planted
from tests.api.test_websocket import receive, socket_to
from tests.servers import SimulatorServer
from tests.support.sse import EVENT_STREAM, operation_over_sse, stream_items

ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS = ("websocket", "sse")


# --- how each code is made to happen -----------------------------------------------------------

Errors = list[dict[str, Any]]


@dataclass(frozen=True)
class Walk:
    """How to make a code happen over a streaming transport: a gateway with `settings`, then
    `payload` sent over it (or `run`, for what a payload alone cannot do)."""

    payload: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[SimulatorServer], None] | None = None
    run: Callable[[GatewayServer, str], Awaitable[Errors]] | None = None


async def over(gateway: GatewayServer, transport: str, walk: Walk) -> Errors:
    """The errors the operation of `walk` ends with over `transport`."""
    assert walk.payload is not None
    if transport == "websocket":
        return await over_websocket(gateway, walk.payload, walk.headers)
    async with httpx.AsyncClient(timeout=30) as http:
        response, events = await operation_over_sse(
            http, gateway.graphql_url, walk.payload, headers=walk.headers
        )
    if not events:  # refused before any stream: a coded HTTP error
        errors: Errors = response.json()["errors"]
        return errors
    assert [event.event for event in events][-1] == "complete"
    return [error for event in events if event.data for error in event.json().get("errors", [])]


async def over_websocket(
    gateway: GatewayServer, payload: dict[str, Any], headers: dict[str, str]
) -> Errors:
    url = gateway.graphql_url.replace("http://", "ws://")
    async with connect(
        url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers=headers,
    ) as socket:
        await socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await receive(socket)) == {"type": "connection_ack"}
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        errors: Errors = []
        while True:
            message = json.loads(await receive(socket))
            if message["type"] == "error":
                refused: Errors = message["payload"]
                return errors + refused
            if message["type"] == "next":
                errors += message["payload"].get("errors", [])
            if message["type"] == "complete":
                return errors


def job(job_id: str, selection: str = "id") -> dict[str, Any]:
    return {"query": f'{{ job(id: "{job_id}") {{ {selection} }} }}'}


UNKNOWN = "5ab5c1de0000000000000000000e4404"
TYPENAME = "{ __typename }"


def persisted(sha256: str, query: str | None = None) -> dict[str, Any]:
    """A request naming its document by hash (Apollo's APQ), with its text or without."""
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256}}
    return {"extensions": extensions, **({} if query is None else {"query": query})}


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: A trusted-documents manifest holding `{ __typename }` only (`write_manifest` writes it).
MANIFEST = Path(tempfile.gettempdir()) / f"mpsgw-error-table-{os.getpid()}.json"


def write_manifest(simulator: SimulatorServer) -> None:
    MANIFEST.write_text(json.dumps({sha256_of(TYPENAME): TYPENAME}))


RUNNING = "5ab5c1de0000000000000000000e4405"
GARBLED = "5ab5c1de0000000000000000000e4406"


def plant_running(simulator: SimulatorServer) -> None:
    simulator.put_job(RUNNING, planted(RUNNING, "Analysing"))


def slow_upstream(simulator: SimulatorServer) -> None:
    httpx.put(f"{simulator.url}/_simulator/faults", json={"latencyMs": 2000}).raise_for_status()


def plant_garbled(simulator: SimulatorServer) -> None:
    simulator.put_job(GARBLED, planted(GARBLED, "Success", "Success: not JSON"))


async def too_many_operations(gateway: GatewayServer, transport: str) -> Errors:
    query = f'subscription {{ jobUpdates(id: "{RUNNING}", intervalSeconds: 60) {{ id }} }}'
    async with socket_to(gateway) as socket:
        for number in range(100):
            payload = {"query": query}
            await socket.send(
                json.dumps({"id": str(number), "type": "subscribe", "payload": payload})
            )
        for _ in range(100):
            assert json.loads(await receive(socket))["type"] == "next"
        await socket.send(
            json.dumps({"id": "more", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        message = json.loads(await receive(socket))
    assert message["type"] == "error"
    errors: Errors = message["payload"]
    return errors


async def idempotency_key_reused(gateway: GatewayServer, transport: str) -> Errors:
    # The key's first use, over the same transport, then the same key for another job.
    first = Walk({"query": SUBMIT, "variables": {"input": job_input(idempotencyKey="k-1")}})
    assert await over(gateway, transport, first) == []
    other = job_input(idempotencyKey="k-1", userData="another order")
    return await over(gateway, transport, Walk({"query": SUBMIT, "variables": {"input": other}}))


async def too_many_streams(gateway: GatewayServer, transport: str) -> Errors:
    query = f'subscription {{ jobUpdates(id: "{RUNNING}", intervalSeconds: 60) {{ id }} }}'
    headers = {"accept": EVENT_STREAM}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", gateway.graphql_url, json={"query": query}, headers=headers) as held,
    ):
        async for _ in stream_items(held):
            break  # its first event: the stream holds the process's only slot
        refused = await http.post(gateway.graphql_url, json={"query": query}, headers=headers)
    assert refused.status_code == 503
    errors: Errors = refused.json()["errors"]
    return errors


async def too_large(gateway: GatewayServer, transport: str) -> Errors:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            gateway.graphql_url,
            json={"query": "{ __typename }", "variables": {"x": "y" * 2048}},
            headers={"accept": EVENT_STREAM},
        )
    assert response.status_code == 413
    errors: Errors = response.json()["errors"]
    return errors


async def unsupported_media_type(gateway: GatewayServer, transport: str) -> Errors:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            gateway.graphql_url,
            content=json.dumps({"query": TYPENAME}),
            headers={"accept": EVENT_STREAM, "content-type": "text/plain"},
        )
    assert response.status_code == 415
    errors: Errors = response.json()["errors"]
    return errors


async def method_not_allowed(gateway: GatewayServer, transport: str) -> Errors:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.put(gateway.graphql_url, headers={"accept": EVENT_STREAM})
    assert response.status_code == 405
    errors: Errors = response.json()["errors"]
    return errors


WALKS: dict[str, Walk] = {
    "INVALID_JOB_ID": Walk(job("not an id")),
    "TOO_MANY_IDS": Walk(
        {"query": '{ jobs(ids: ["a1", "a2", "a3"]) { id } }'}, settings={"max_ids": 2}
    ),
    "INVALID_ARGUMENT": Walk(
        {"query": 'subscription { jobUpdates(id: "a1", intervalSeconds: 0.1) { id } }'}
    ),
    # One slot a second, a deadline far shorter: the second id cannot get a slot in time.
    "BUDGET_EXHAUSTED": Walk(
        {"query": f'{{ jobs(ids: ["{UNKNOWN}", "{RUNNING}"]) {{ id }} }}'},
        settings={"upstream_qps": 1},
        headers={"x-request-timeout": "0.3"},
    ),
    # An upstream call slower than the request's deadline, which comes while the call is under
    # way however long the request took to reach it (a stall as long as a short deadline made it
    # BUDGET_EXHAUSTED instead); the upstream's 2 s are waited out when the simulator stops.
    "DEADLINE_EXCEEDED": Walk(
        job(UNKNOWN), headers={"x-request-timeout": "1.5"}, prepare=slow_upstream
    ),
    "QUERY_TOO_COMPLEX": Walk(job(UNKNOWN), settings={"max_cost": 5}),
    "UPSTREAM_AUTH_FAILED": Walk(job(UNKNOWN), settings={"access_key_secret": "not the secret"}),
    "UPSTREAM_BAD_RESPONSE": Walk(job(GARBLED, "result { code }"), prepare=plant_garbled),
    "GRAPHQL_PARSE_FAILED": Walk({"query": "subscription {"}),
    "GRAPHQL_VALIDATION_FAILED": Walk({"query": "subscription { nope }"}),
    "BAD_USER_INPUT": Walk(
        {
            "query": 'subscription($i: Float!) { jobUpdates(id: "a1", intervalSeconds: $i) '
            "{ id } }",
            "variables": {"i": "soon"},
        }
    ),
    "PERSISTED_QUERY_NOT_FOUND": Walk(persisted(sha256_of("{ never registered }"))),
    "PERSISTED_QUERY_NOT_SUPPORTED": Walk(persisted(sha256_of(TYPENAME)), settings={"apq": False}),
    "PERSISTED_QUERY_HASH_MISMATCH": Walk(persisted("0" * 64, TYPENAME)),
    "PERSISTED_QUERY_INVALID": Walk(persisted("not a hash")),
    "PERSISTED_QUERY_NOT_IN_LIST": Walk(
        persisted(sha256_of("{ job }")),
        settings={"trusted_documents": MANIFEST},
        prepare=write_manifest,
    ),
    "PERSISTED_QUERY_REQUIRED": Walk(
        {"query": "{ __schema { description } }"},
        settings={"trusted_documents": MANIFEST},
        prepare=write_manifest,
    ),
    "IDEMPOTENCY_KEY_REUSED": Walk(run=idempotency_key_reused),
    "TOO_MANY_OPERATIONS": Walk(run=too_many_operations, prepare=plant_running),
    "TOO_MANY_STREAMS": Walk(
        run=too_many_streams, prepare=plant_running, settings={"sse_max_streams": 1}
    ),
    "REQUEST_TOO_LARGE": Walk(run=too_large, settings={"max_body_bytes": 1024}),
    "METHOD_NOT_ALLOWED": Walk(run=method_not_allowed),
    "UNSUPPORTED_MEDIA_TYPE": Walk(run=unsupported_media_type),
    "OPERATION_NAME_REQUIRED": Walk({"query": "query A { __typename } query B { __typename }"}),
    "UNKNOWN_OPERATION_NAME": Walk({"query": TYPENAME, "operationName": "Missing"}),
}

#: BAD_REQUEST differs by transport: an empty query over WebSocket, a query that is no string
#: over SSE (over WebSocket, that closes the socket with 4400, as the protocol says).
BAD_REQUEST = {
    "websocket": Walk({"query": ""}),
    "sse": Walk({"query": 7}),
}

#: Codes that cannot happen over a transport, and why.
ELSEWHERE: dict[str, dict[str, str]] = {
    "TOO_MANY_OPERATIONS": {"sse": "one operation per stream; TOO_MANY_STREAMS bounds streams"},
    "TOO_MANY_STREAMS": {"websocket": "a socket carries operations, bounded per connection"},
    "REQUEST_TOO_LARGE": {"websocket": "a frame over the limit closes the socket with 1009"},
    "METHOD_NOT_ALLOWED": {"websocket": "a WebSocket has no method but its GET handshake"},
    "UNSUPPORTED_MEDIA_TYPE": {"websocket": "frames are JSON by the protocol; no content type"},
}

#: Codes neither transport can be made to show by a request alone, and why; each is shown
#: elsewhere over HTTP, and reaches a stream's client by the same error formatting.
NOT_BY_A_REQUEST = {
    "SHUTTING_DOWN": "needs the process to get SIGTERM (tests/test_server.py)",
    "UPSTREAM_THROTTLED": "needs the upstream to throttle after every retry (tests/mps)",
    "UPSTREAM_UNAVAILABLE": "needs the upstream down or failing after every retry (tests/mps)",
    "UPSTREAM_TIMEOUT": "needs the upstream silent past the read timeout (tests/mps)",
    "UPSTREAM_REJECTED": "needs another 4xx of the upstream (tests/mps)",
    "NOT_FOUND": "GraphiQL's files, not /graphql",
    "REQUEST_TIMEOUT": "a body that does not arrive: the same middleware for every Accept",
    "INTERNAL_ERROR": "a bug",
    "FORBIDDEN": "needs authentication configured: tests/callers/test_isolation.py, over HTTP "
    "and WebSocket",
    "UNAUTHENTICATED": "a refused credential is an HTTP 401 before any stream starts, and a "
    "WebSocket close (4403): tests/callers/test_isolation.py",
    "RATE_LIMITED": "needs authentication and GATEWAY_TENANT_QPS: tests/callers/test_isolation.py",
    "SUBMIT_OUTCOME_UNKNOWN": "needs the upstream's answer to a submission lost (test_submit)",
    "SUBSCRIPTION_TRANSPORT_REQUIRED": "plain HTTP only: both transports serve subscriptions "
    "(tests/api/test_error_table.py walks it over HTTP)",
    "CORS_PREFLIGHT_REFUSED": "a browser's OPTIONS preflight, before any transport "
    "(tests/api/test_error_table.py walks it over HTTP)",
    "OVERLOADED": "needs a process short of CPU or GATEWAY_MAX_CONCURRENT_REQUESTS running "
    "(tests/api/test_admission.py): answered at the door, before any stream starts; a "
    "WebSocket's operations are not admitted",
}


def walk_of(code: str, transport: str) -> Walk | None:
    if code in NOT_BY_A_REQUEST or transport in ELSEWHERE.get(code, {}):
        return None
    if code == "BAD_REQUEST":
        return BAD_REQUEST[transport]
    return WALKS[code]


def test_every_code_of_the_table_is_walked_or_placed() -> None:
    table = set(error_table())
    known = set(WALKS) | set(NOT_BY_A_REQUEST) | {"BAD_REQUEST"}
    assert table - known == set(), "codes of the README's table that this test does not place"
    assert known - table == set(), "codes this test places that the README's table lacks"
    assert set(WALKS) & set(NOT_BY_A_REQUEST) == set()


WALKED = [
    (code, transport)
    for code in sorted(error_table())
    for transport in TRANSPORTS
    if (code in WALKS or code == "BAD_REQUEST") and walk_of(code, transport) is not None
]


@pytest.fixture
def gateway_for(
    simulator: SimulatorServer, start_gateway: StartGateway
) -> Callable[[Walk], AbstractContextManager[GatewayServer]]:
    def start(walk: Walk) -> AbstractContextManager[GatewayServer]:
        if walk.prepare is not None:
            walk.prepare(simulator)
        return start_gateway(**walk.settings)

    return start


@pytest.mark.slow
@pytest.mark.parametrize(("code", "transport"), WALKED)
async def test_the_code_reaches_the_client_with_its_fields(
    gateway_for: Callable[[Walk], AbstractContextManager[GatewayServer]],
    code: str,
    transport: str,
) -> None:
    walk = walk_of(code, transport)
    assert walk is not None
    with gateway_for(walk) as gateway:
        if walk.run is not None:
            errors = await walk.run(gateway, transport)
        else:
            errors = await over(gateway, transport, walk)
    extras, conditional = error_table()[code]
    coded = next((error for error in errors if error["extensions"]["code"] == code), None)
    assert coded is not None, f"{code} did not arrive over {transport}: {errors}"
    assert coded["message"]
    assert "requestId" in coded["extensions"]
    if not conditional:
        assert set(extras) <= set(coded["extensions"]), coded
