"""Real gateways for tests, in front of the real simulator of `tests/conftest.py`.

`start_gateway(**settings)` serves a gateway pointed at the simulator over HTTP, with the
simulator's demo key pair, exactly as a deployment would point it at the cloud.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.server import server_options
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
)
from tests.servers import SimulatorServer, run_asgi_server
from tests.support.gateway import ADMIN_TOKEN


def gateway_settings(simulator: SimulatorServer, **overrides: Any) -> GatewaySettings:
    """Settings of a gateway in front of `simulator`, as an operator would write them."""
    values: dict[str, Any] = {
        "mps_endpoint": simulator.url,
        "access_key_id": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "access_key_secret": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "admin_token": ADMIN_TOKEN,
        # Nothing shed for a slow start: on a busy machine the wait is the machine's.
        "admission_max_wait": 0,
        "admission_target_wait": 0,
        **overrides,
    }
    return GatewaySettings(**values)


def embedded_settings(**overrides: Any) -> GatewaySettings:
    """Settings of a gateway on its embedded simulator: no credentials, no endpoint."""
    values: dict[str, Any] = {
        "access_key_id": None,
        "access_key_secret": None,
        "security_token": None,
        "mps_endpoint": None,
        "admission_max_wait": 0,
        "admission_target_wait": 0,
        **overrides,
    }
    return GatewaySettings(**values)


@dataclass(frozen=True)
class GatewayServer:
    url: str
    settings: GatewaySettings

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"


StartGateway = Callable[..., AbstractContextManager[GatewayServer]]


@pytest.fixture
def start_gateway(simulator: SimulatorServer) -> StartGateway:
    """`with start_gateway(upstream_qps=50) as gateway:` serves a gateway on a real port."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[GatewayServer]:
        settings = gateway_settings(simulator, **overrides)
        # Served as `python -m gateway serve` serves it: its connection limits included.
        with run_asgi_server(
            create_app(settings), lifespan="on", **server_options(settings)
        ) as url:
            yield GatewayServer(url=url, settings=settings)

    return start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Iterator[GatewayServer]:
    with start_gateway() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def graphql(
    http: httpx.AsyncClient,
    gateway: GatewayServer,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POSTs one GraphQL operation; returns the whole response body (asserting HTTP 200)."""
    response = await http.post(
        gateway.graphql_url,
        json={"query": query, "variables": variables or {}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = without_request_ids(response.json(), response.headers["x-request-id"])
    return body


def answer(response: httpx.Response) -> Any:
    """The body of an HTTP answer, without the request ids of its errors (see below)."""
    body: dict[str, Any] = without_request_ids(response.json(), response.headers["x-request-id"])
    return body


def without_request_ids(body: Any, request_id: str) -> Any:
    """`body` (an answer, or a WebSocket message) with the gateway's request id taken out of
    every error's extensions, once checked to be `request_id`: tests assert whole answers, and
    the id is new in each."""
    if not isinstance(body, dict):
        return body
    payload = body.get("payload")
    if isinstance(payload, dict):  # next: an answer
        return {**body, "payload": without_request_ids(payload, request_id)}
    if isinstance(payload, list):  # error: a list of errors
        return {**body, "payload": _stripped(payload, request_id)}
    if isinstance(body.get("errors"), list):
        return {**body, "errors": _stripped(body["errors"], request_id)}
    return body


def _stripped(errors: list[Any], request_id: str) -> list[Any]:
    stripped = []
    for error in errors:
        extensions = dict(error.get("extensions") or {})
        assert extensions.pop("requestId", None) == request_id, error
        stripped.append({**error, "extensions": extensions})
    return stripped
