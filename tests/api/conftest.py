"""Real servers for gateway tests: a simulator on a real port and gateways in front of it.

`simulator` serves the MPS simulator (limit `SIMULATOR_QPS` below unless a test parametrizes
`simulator_settings`); `start_gateway(**settings)` serves a gateway pointed at it over HTTP, with
the simulator's demo key pair, exactly as a deployment would point it at the cloud.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
    SimulatorSettings,
)
from gateway.simulator import create_simulator_app
from gateway.simulator.demo import demo_job_ids
from tests.servers import run_asgi_server


@dataclass(frozen=True)
class SimulatorServer:
    url: str
    settings: SimulatorSettings

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_simulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def query_stats(self) -> dict[str, int]:
        """calls / throttled / peakWindow of QueryIProductionJob."""
        action: dict[str, int] = self.stats()["actions"]["QueryIProductionJob"]
        return action

    def reset_stats(self) -> None:
        httpx.post(f"{self.url}/_simulator/stats/reset").raise_for_status()

    def set_faults(self, **faults: float) -> None:
        httpx.put(f"{self.url}/_simulator/faults", json=faults).raise_for_status()

    def put_job(self, job_id: str, fields: dict[str, Any]) -> None:
        httpx.put(f"{self.url}/_simulator/jobs/{job_id}", json=fields).raise_for_status()

    def jobs(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = httpx.get(f"{self.url}/_simulator/jobs").json()["jobs"]
        return listing

    def demo_ids(self) -> list[str]:
        return demo_job_ids(self.settings)


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(qps=100)


@pytest.fixture
def simulator(simulator_settings: SimulatorSettings) -> Iterator[SimulatorServer]:
    with run_asgi_server(create_simulator_app(simulator_settings)) as url:
        yield SimulatorServer(url=url, settings=simulator_settings)


def gateway_settings(simulator: SimulatorServer, **overrides: Any) -> GatewaySettings:
    """Settings of a gateway in front of `simulator`, as an operator would write them."""
    values: dict[str, Any] = {
        "mps_endpoint": simulator.url,
        "access_key_id": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "access_key_secret": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
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
        with run_asgi_server(create_app(settings), lifespan="on") as url:
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
    body: dict[str, Any] = response.json()
    return body
