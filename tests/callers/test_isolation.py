"""Callers and tenants through a real gateway in front of a real simulator, over HTTP,
WebSocket and SSE: who may ask, what each tenant sees, and that no credential leaks anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.callers.api_keys import key_hash, new_key
from gateway.callers.envelope import wrap
from gateway.mps.signing import RpcSignatureV1
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET
from gateway.simulator.jobs import success_result
from tests.api.conftest import (  # noqa: F401 (fixtures)
    GatewayServer,
    StartGateway,
    http,
    start_gateway,
    without_request_ids,
)
from tests.servers import SimulatorServer
from tests.support.sse import EVENT_STREAM, operation_over_sse

from .issuer import AUDIENCE, ISSUER, Issuer

pytestmark = pytest.mark.slow

#: Bound on any one wait for the gateway; only a hang reaches it.
SAFETY_TIMEOUT = 30.0

ACME_JOB = "acac0000000000000000000000000001"
GLOBEX_JOB = "6106e000000000000000000000000002"
ORPHAN_JOB = "0e0e0000000000000000000000000003"
MISSING_JOB = "deadbeef000000000000000000000004"

JOB = """query($id: ID!) {
  job(id: $id) { id userData result { files { name signedUrl(expiresInSeconds: 60) } } }
}"""
NODE = "query($id: ID!) { node(id: $id) { id } }"
JOBS = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"
UPDATES = "subscription($id: ID!) { jobUpdates(id: $id, intervalSeconds: 0.5) { id } }"


def planted(job_id: str, user_data: str | None) -> dict[str, str]:
    return {
        "JobId": job_id,
        "FunctionName": "ImageCartoonize",
        "State": "Success",
        "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
        "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}.jpg",
        "JobParams": "{}",
        "UserData": "null" if user_data is None else user_data,
        "Result": success_result(["out/face.jpg"]),
    }


@dataclass
class Credentials:
    issuer: Issuer
    acme_key: str
    ops_key: str
    settings: dict[str, Any]

    def bearer(self, **claims: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.issuer.token(**claims)}"}


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    issuer = Issuer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    acme_key, ops_key = new_key(), new_key()
    keys = tmp_path / "keys.json"
    entries = [
        {
            "name": "acme-server",
            "tenant": "acme",
            "scopes": ["jobs:read"],
            "sha256": key_hash(acme_key),
        },
        {"name": "ops", "tenant": None, "scopes": ["jobs:read:all"], "sha256": key_hash(ops_key)},
    ]
    keys.write_text(json.dumps({"keys": entries}))
    settings = {
        "auth": "jwt,api-key",
        "jwt_jwks_file": str(jwks),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "api_keys_file": str(keys),
    }
    return Credentials(issuer, acme_key, ops_key, settings)


@pytest.fixture
def jobs(simulator: SimulatorServer) -> None:
    simulator.put_job(ACME_JOB, planted(ACME_JOB, wrap("acme", '{"order":7}')))
    simulator.put_job(GLOBEX_JOB, planted(GLOBEX_JOB, wrap("globex", None)))
    simulator.put_job(ORPHAN_JOB, planted(ORPHAN_JOB, None))


@pytest.fixture
def gateway(
    start_gateway: StartGateway,  # noqa: F811
    credentials: Credentials,
    jobs: None,
) -> Iterator[GatewayServer]:
    with start_gateway(**credentials.settings) as server:
        yield server


async def post(
    http: httpx.AsyncClient,  # noqa: F811
    gateway: GatewayServer,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
) -> httpx.Response:
    return await http.post(
        gateway.graphql_url, json={"query": query, "variables": variables}, headers=headers
    )


async def data(
    http: httpx.AsyncClient,  # noqa: F811
    gateway: GatewayServer,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
) -> Any:
    response = await post(http, gateway, query, variables, headers)
    assert response.status_code == 200, response.text
    return without_request_ids(response.json(), response.headers["x-request-id"])


async def test_no_credential_is_401_with_a_challenge(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
) -> None:
    for headers in (
        {},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": "mpsgw_guessed"},
        {"authorization": f"ApiKey {credentials.acme_key}x"},
        credentials.bearer(exp=int(time.time()) - 3600),
    ):
        response = await post(http, gateway, JOB, {"id": ACME_JOB}, headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == (
            'Bearer realm="mps-gateway", ApiKey realm="mps-gateway"'
        )
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert error["message"].startswith("Authentication failed: ")
    # GraphiQL's page needs no credential (its Headers tab sends one with each query).
    page = await http.get(gateway.graphql_url, headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "<html" in page.text.lower()


async def test_a_tenant_sees_its_jobs_and_others_answer_as_missing_ones(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
) -> None:
    for headers in (
        credentials.bearer(tenant="acme"),
        {"authorization": f"ApiKey {credentials.acme_key}"},
        {"x-api-key": credentials.acme_key},
    ):
        own = await data(http, gateway, JOB, {"id": ACME_JOB}, headers)
        assert own["data"]["job"]["id"] == ACME_JOB
        # The caller's own user data, without the envelope.
        assert own["data"]["job"]["userData"] == '{"order":7}'
        [file] = own["data"]["job"]["result"]["files"]
        assert file["signedUrl"].startswith("https://")
        missing = await data(http, gateway, JOB, {"id": MISSING_JOB}, headers)
        assert missing == {"data": {"job": None}}
        for other in (GLOBEX_JOB, ORPHAN_JOB):
            # Byte for byte what a missing job answers: no signedUrl, no existence oracle.
            assert await data(http, gateway, JOB, {"id": other}, headers) == missing
            assert await data(http, gateway, NODE, {"id": other}, headers) == {
                "data": {"node": None}
            }
        ids = [ACME_JOB, GLOBEX_JOB, MISSING_JOB, ORPHAN_JOB]
        assert await data(http, gateway, JOBS, {"ids": ids}, headers) == {
            "data": {"jobs": [{"id": ACME_JOB}, None, None, None]}
        }
    globex = credentials.bearer(tenant="globex", sub="user-2")
    assert await data(http, gateway, JOBS, {"ids": [ACME_JOB, GLOBEX_JOB]}, globex) == {
        "data": {"jobs": [None, {"id": GLOBEX_JOB}]}
    }


async def test_an_operator_sees_every_job(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
) -> None:
    ids = [ACME_JOB, GLOBEX_JOB, ORPHAN_JOB, MISSING_JOB]
    for headers in (
        {"x-api-key": credentials.ops_key},
        credentials.bearer(tenant=None, scope="jobs:read:all"),
    ):
        assert await data(http, gateway, JOBS, {"ids": ids}, headers) == {
            "data": {"jobs": [{"id": ACME_JOB}, {"id": GLOBEX_JOB}, {"id": ORPHAN_JOB}, None]}
        }


async def test_a_caller_without_jobs_read_is_forbidden(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    simulator: SimulatorServer,
) -> None:
    simulator.reset_stats()
    submitter = credentials.bearer(scope="jobs:submit")
    answer = await data(http, gateway, JOB, {"id": ACME_JOB}, submitter)
    assert answer == {
        "data": {"job": None},
        "errors": [
            {
                "message": "Expected a caller with the scope jobs:read to read jobs.",
                "locations": [{"line": 2, "column": 3}],
                "path": ["job"],
                "extensions": {"code": "FORBIDDEN", "scope": "jobs:read"},
            }
        ],
    }
    # Refused before any upstream call.
    assert simulator.query_stats()["calls"] == 0


async def test_the_default_tenant_owns_jobs_submitted_elsewhere(
    start_gateway: StartGateway,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    jobs: None,
) -> None:
    with start_gateway(**credentials.settings, default_tenant="acme") as gateway:
        ids = [ACME_JOB, GLOBEX_JOB, ORPHAN_JOB]
        acme, globex = credentials.bearer(tenant="acme"), credentials.bearer(tenant="globex")
        assert await data(http, gateway, JOBS, {"ids": ids}, acme) == {
            "data": {"jobs": [{"id": ACME_JOB}, None, {"id": ORPHAN_JOB}]}
        }
        assert await data(http, gateway, JOBS, {"ids": ids}, globex) == {
            "data": {"jobs": [None, {"id": GLOBEX_JOB}, None]}
        }


async def test_a_job_submitted_for_a_tenant_is_that_tenants(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    simulator: SimulatorServer,
) -> None:
    auth = RpcSignatureV1(SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET)
    async with httpx.AsyncClient(base_url=simulator.url, auth=auth) as mps:
        response = await mps.post(
            "/",
            params={"Action": "SubmitIProductionJob", "Version": "2014-06-18", "Format": "JSON"},
            data={
                "FunctionName": "CaptionExtraction",
                "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/talk.mp4",
                "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}.srt",
                "UserData": wrap("globex", "mine") or "",
            },
        )
    job_id = response.json()["JobId"]
    query = "query($id: ID!) { job(id: $id) { id userData } }"
    globex = credentials.bearer(tenant="globex")
    assert await data(http, gateway, query, {"id": job_id}, globex) == {
        "data": {"job": {"id": job_id, "userData": "mine"}}
    }
    acme = credentials.bearer(tenant="acme")
    assert await data(http, gateway, query, {"id": job_id}, acme) == {"data": {"job": None}}


@asynccontextmanager
async def socket_to(
    gateway: GatewayServer, payload: dict[str, Any] | None
) -> AsyncIterator[ClientConnection]:
    url = gateway.graphql_url.replace("http://", "ws://")
    async with connect(url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            init["payload"] = payload
        await socket.send(json.dumps(init))
        yield socket


async def receive(socket: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), SAFETY_TIMEOUT))
    return message


async def operation(
    socket: ClientConnection, operation_id: str, query: str, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    payload = {"query": query, "variables": variables}
    await socket.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
    messages = []
    while True:
        message = await receive(socket)
        messages.append(message)
        if message["type"] in ("complete", "error"):
            return messages


async def closed_with(socket: ClientConnection) -> tuple[int, str]:
    """The close frame the gateway sends (messages before it are skipped)."""
    try:
        while True:
            await asyncio.wait_for(socket.recv(), SAFETY_TIMEOUT)
    except ConnectionClosed as closed:
        frame = closed.rcvd
    assert frame is not None
    return frame.code, frame.reason


async def test_a_websocket_is_its_connection_init_callers(
    gateway: GatewayServer, credentials: Credentials
) -> None:
    token = credentials.issuer.token(tenant="acme")
    async with socket_to(gateway, {"Authorization": f"Bearer {token}"}) as socket:
        assert await receive(socket) == {"type": "connection_ack"}
        own = await operation(socket, "1", UPDATES, {"id": ACME_JOB})
        assert [m["type"] for m in own] == ["next", "complete"]
        assert own[0]["payload"] == {"data": {"jobUpdates": {"id": ACME_JOB}}}
        for number, other in enumerate((GLOBEX_JOB, ORPHAN_JOB, MISSING_JOB)):
            updates = await operation(socket, f"u{number}", UPDATES, {"id": other})
            assert [m.get("payload") for m in updates] == [{"data": {"jobUpdates": None}}, None]
            queried = await operation(socket, f"q{number}", JOB, {"id": other})
            assert queried[0]["payload"] == {"data": {"job": None}}
    # An API key in the payload works the same (x-api-key, as a server would send it).
    async with socket_to(gateway, {"x-api-key": credentials.ops_key}) as socket:
        assert await receive(socket) == {"type": "connection_ack"}
        seen = await operation(socket, "1", JOB, {"id": ORPHAN_JOB})
        assert seen[0]["payload"]["data"]["job"]["id"] == ORPHAN_JOB


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"Authorization": "Bearer forged"}, {"Authorization": 7}, {"x-api-key": "nope"}],
)
async def test_a_websocket_without_a_good_credential_is_closed_4403(
    gateway: GatewayServer, payload: dict[str, Any] | None
) -> None:
    async with socket_to(gateway, payload) as socket:
        assert await closed_with(socket) == (4403, "Forbidden")


async def test_a_websocket_closes_when_its_token_expires(
    start_gateway: StartGateway,  # noqa: F811
    credentials: Credentials,
    jobs: None,
) -> None:
    with start_gateway(**credentials.settings, jwt_leeway=0.0) as gateway:
        # Long enough to connect on a busy machine; the socket then outlives it.
        token = credentials.issuer.token(exp=int(time.time()) + 8)
        async with socket_to(gateway, {"Authorization": f"Bearer {token}"}) as socket:
            assert await receive(socket) == {"type": "connection_ack"}
            # A subscription that would run for a long time (a running job, polled slowly).
            assert await closed_with(socket) == (4403, "Token expired")


async def test_a_tenant_over_its_rate_is_refused_and_others_are_not(
    start_gateway: StartGateway,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    jobs: None,
) -> None:
    # 0.01 operations a second: a burst of one, then none for 100 s (no race with the clock).
    with start_gateway(**credentials.settings, tenant_qps=0.01) as gateway:
        acme = credentials.bearer(tenant="acme")
        first = await data(http, gateway, JOB, {"id": ACME_JOB}, acme)
        assert first["data"]["job"]["id"] == ACME_JOB
        second = await data(http, gateway, JOB, {"id": ACME_JOB}, acme)
        [error] = second["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 90 < error["extensions"]["retryAfter"] <= 100
        globex = credentials.bearer(tenant="globex")
        assert (await data(http, gateway, JOB, {"id": GLOBEX_JOB}, globex))["data"]["job"]


async def test_no_credential_shows_in_a_log_line_an_error_or_readyz(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = credentials.issuer.token(tenant="acme")
    expired = credentials.issuer.token(exp=int(time.time()) - 3600)
    guessed = new_key()
    secrets = [good, expired, guessed, credentials.acme_key, credentials.ops_key]
    secrets += [key_hash(credentials.acme_key), key_hash(credentials.ops_key), key_hash(guessed)]
    seen = []
    with caplog.at_level(logging.DEBUG):
        for headers in (
            {"authorization": f"Bearer {good}"},
            {"authorization": f"Bearer {expired}"},
            {"x-api-key": guessed},
            {"x-api-key": credentials.acme_key},
            {"authorization": f"ApiKey {credentials.ops_key}"},
        ):
            response = await post(http, gateway, JOB, {"id": ACME_JOB}, headers)
            seen.append(response.text)
            seen.append(json.dumps(dict(response.headers)))
        for payload in ({"Authorization": f"Bearer {expired}"}, {"x-api-key": guessed}):
            async with socket_to(gateway, payload) as socket:
                seen.append(repr(await closed_with(socket)))
        seen.append((await http.get(f"{gateway.url}/readyz")).text)
    seen.append(caplog.text)
    for text in seen:
        for secret in secrets:
            assert secret not in text
            # Not even the signature part of a token.
            assert secret.rsplit(".", 1)[-1] not in text


async def sse(
    http: httpx.AsyncClient,  # noqa: F811
    gateway: GatewayServer,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
) -> tuple[httpx.Response, list[Any]]:
    """One operation over SSE: the response and its events as (name, payload) pairs, request
    ids left out."""
    payload = {"query": query, "variables": variables}
    response, events = await operation_over_sse(http, gateway.graphql_url, payload, headers=headers)
    request_id = response.headers["x-request-id"]
    return response, [
        (event.event, without_request_ids(event.json(), request_id) if event.data else None)
        for event in events
    ]


async def test_over_sse_another_tenants_job_answers_as_a_missing_one(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
) -> None:
    for headers in (credentials.bearer(tenant="acme"), {"x-api-key": credentials.acme_key}):
        response, own = await sse(http, gateway, UPDATES, {"id": ACME_JOB}, headers)
        assert response.status_code == 200
        assert own == [("next", {"data": {"jobUpdates": {"id": ACME_JOB}}}), ("complete", None)]
        _, own_job = await sse(http, gateway, JOB, {"id": ACME_JOB}, headers)
        assert own_job[0][1]["data"]["job"]["id"] == ACME_JOB
        _, missing_updates = await sse(http, gateway, UPDATES, {"id": MISSING_JOB}, headers)
        assert missing_updates == [("next", {"data": {"jobUpdates": None}}), ("complete", None)]
        _, missing_job = await sse(http, gateway, JOB, {"id": MISSING_JOB}, headers)
        assert missing_job == [("next", {"data": {"job": None}}), ("complete", None)]
        for other in (GLOBEX_JOB, ORPHAN_JOB):
            # Event for event what a missing job answers: no existence oracle on this transport.
            assert (await sse(http, gateway, UPDATES, {"id": other}, headers))[1] == (
                missing_updates
            )
            assert (await sse(http, gateway, JOB, {"id": other}, headers))[1] == missing_job
    # An operator sees them all over SSE too (the stream is not simply blind).
    ops = {"x-api-key": credentials.ops_key}
    _, seen = await sse(http, gateway, UPDATES, {"id": ORPHAN_JOB}, ops)
    assert seen[0] == ("next", {"data": {"jobUpdates": {"id": ORPHAN_JOB}}})


async def test_over_sse_no_good_credential_is_401_before_any_stream(
    gateway: GatewayServer,
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,
    simulator: SimulatorServer,
) -> None:
    simulator.reset_stats()
    for headers in (
        {},
        {"authorization": "Bearer forged"},
        {"x-api-key": "mpsgw_guessed"},
        credentials.bearer(exp=int(time.time()) - 3600),
    ):
        for query, variables in ((UPDATES, {"id": ACME_JOB}), (JOB, {"id": ACME_JOB})):
            response, events = await sse(http, gateway, query, variables, headers)
            assert response.status_code == 401, headers
            assert not response.headers["content-type"].startswith(EVENT_STREAM)
            assert events == []
            assert response.headers["www-authenticate"] == (
                'Bearer realm="mps-gateway", ApiKey realm="mps-gateway"'
            )
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "UNAUTHENTICATED"
    # Refused before any upstream call.
    assert simulator.query_stats()["calls"] == 0
