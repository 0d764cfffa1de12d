"""The demo that moves, as a newcomer meets it: the start banner's job and subscription, the
embedded simulator's admin routes on the gateway, and a moving job followed over WebSocket to
its end on a real embedded gateway, with a short cycle."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse, validate
from starlette.applications import Starlette

from gateway.api.schema import build_schema
from gateway.app import create_app
from gateway.banner import banner
from gateway.server import server_options
from gateway.settings import SimulatorSettings
from gateway.simulator import Simulator, create_simulator_app, moving_demo_job_id
from tests.api.conftest import GatewayServer, StartGateway, embedded_settings
from tests.api.test_subscriptions import graphql_ws, subscribe
from tests.servers import run_asgi_server

ROOT = Path(__file__).resolve().parents[2]
SEED = SimulatorSettings().seed
PHASE = 1.5
#: What the banner's subscription asks for.
SELECTION = "id state isFinished result { code files { name url } }"


def banner_subscription(banner: str) -> str:
    lines = banner.splitlines()
    start = lines.index("  subscription {")
    end = lines.index("  }", start)
    return textwrap.dedent("\n".join(lines[start : end + 1]))


def test_the_banner_names_the_moving_job_and_a_subscription_that_runs() -> None:
    settings = embedded_settings()
    text = banner(settings, "http://127.0.0.1:8000/graphql")
    subscription = banner_subscription(text)

    moving = moving_demo_job_id(SEED)
    assert subscription == (
        f'subscription {{\n  jobUpdates(id: "{moving}") {{\n    {SELECTION}\n  }}\n}}'
    )
    assert validate(build_schema(settings)._schema, parse(subscription)) == []
    assert f"A demo job that moves: {moving} is QUEUING from now" in text
    assert "listed at http://127.0.0.1:8000/_simulator/jobs" in text


def test_the_readme_names_the_same_job_and_subscription() -> None:
    readme = (ROOT / "README.md").read_text()
    subscription = banner_subscription(banner(embedded_settings(), "http://127.0.0.1:8000/graphql"))

    assert subscription in readme


@pytest.fixture
def embedded() -> Iterator[tuple[GatewayServer, Simulator]]:
    """An embedded gateway whose simulator's demo jobs move every `PHASE` seconds."""
    settings = embedded_settings(cache_running_ttl=0.1)
    simulator_app = create_simulator_app(SimulatorSettings(demo_phase_seconds=PHASE))
    app = create_app(settings, simulator=simulator_app)
    with run_asgi_server(app, lifespan="on", **server_options(settings)) as url:
        yield GatewayServer(url=url, settings=settings), simulator_of(simulator_app)


def simulator_of(app: Starlette) -> Simulator:
    simulator: Simulator = app.state.simulator
    return simulator


async def cover_run(http: httpx.AsyncClient, gateway: GatewayServer) -> dict[str, Any]:
    """The listing entry of the Cover slot's latest run, read from the gateway."""
    response = await http.get(f"{gateway.url}/_simulator/jobs")
    assert response.status_code == 200
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    [entry] = [e for e in jobs if e["source"] == "cycling" and e["functionName"] == "Cover"]
    return entry


@pytest.mark.slow
async def test_a_moving_demo_job_is_followed_to_its_end_and_stays_finished(
    embedded: tuple[GatewayServer, Simulator], http: httpx.AsyncClient
) -> None:
    gateway, simulator = embedded
    # A run with time left to see it Queuing: the first (the banner's job) unless the start
    # was slow, else the next one, a period later.
    for _ in range(200):
        run = await cover_run(http, gateway)
        if run["state"] == "Queuing" and run["cycle"]["stateEndsInSeconds"] >= PHASE / 2:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"No Cover run was found Queuing: {run}")
    job_id = run["id"]
    query = (
        "subscription($id: ID!) { jobUpdates(id: $id, intervalSeconds: 0.5) { "
        f"{SELECTION} userData }} }}"
    )
    async with graphql_ws(gateway) as socket:
        messages = await subscribe(socket, query, {"id": job_id})

    started = simulator.cycles.origin + run["cycle"]["run"] * 3 * PHASE
    stamp = int(started * 1000)
    user_data = json.dumps(
        {"demo": "cycling", "run": run["cycle"]["run"], "nextJobId": run["cycle"]["nextJobId"]},
        separators=(",", ":"),
    )
    base = "https://media-results-sh.oss-cn-shanghai.aliyuncs.com/cover"
    files = [
        {"name": f"product-launch-{stamp}-{n}.jpg", "url": f"{base}/product-launch-{stamp}-{n}.jpg"}
        for n in range(3)
    ]

    def event(state: str, result: dict[str, Any] | None) -> dict[str, Any]:
        job = {
            "id": job_id,
            "state": state,
            "isFinished": state == "SUCCESS",
            "result": result,
            "userData": user_data,
        }
        return {"id": "1", "type": "next", "payload": {"data": {"jobUpdates": job}}}

    assert messages == [
        event("QUEUING", None),
        event("ANALYSING", None),
        event("SUCCESS", {"code": "Success", "files": files}),
        {"id": "1", "type": "complete"},
    ]

    # The next run is another job, named by this one's userData; this one stays finished.
    for _ in range(200):
        if (await cover_run(http, gateway))["id"] == run["cycle"]["nextJobId"]:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("The next Cover run never started.")
    again = await http.post(
        gateway.graphql_url,
        json={"query": f'{{ job(id: "{job_id}") {{ state isFinished }} }}'},
    )
    assert again.json() == {"data": {"job": {"state": "SUCCESS", "isFinished": True}}}


async def test_the_embedded_simulators_admin_routes_are_the_gateways(
    embedded: tuple[GatewayServer, Simulator], http: httpx.AsyncClient
) -> None:
    gateway, simulator = embedded
    listing = (await http.get(f"{gateway.url}/_simulator/jobs")).json()["jobs"]
    faults = await http.put(f"{gateway.url}/_simulator/faults", json={"latencyMs": 1})
    # Only the admin routes: the simulated MPS API itself stays in process.
    rpc = await http.get(f"{gateway.url}/_simulator/", params={"Action": "QueryIProductionJob"})

    assert [entry["id"] for entry in listing] == [
        entry["id"] for entry in simulator.listing(simulator.clock())
    ]
    assert moving_demo_job_id(SEED) in {entry["id"] for entry in listing}
    assert faults.status_code == 200
    assert simulator.faults.latency_ms == 1
    assert rpc.status_code == 404


async def test_a_gateway_on_another_upstream_serves_no_simulator_routes(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway() as gateway:
        response = await http.get(f"{gateway.url}/_simulator/jobs")
    assert response.status_code == 404


def test_a_simulator_is_refused_for_a_gateway_on_another_upstream() -> None:
    settings = embedded_settings(mps_endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"^Expected no embedded simulator for a gateway on "):
        create_app(settings, simulator=create_simulator_app(SimulatorSettings()))
