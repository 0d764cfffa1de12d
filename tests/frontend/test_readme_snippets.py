"""The README's "For frontend developers" snippets, run with the real npm packages against real
gateways: Apollo Client's cache redirects (counted in the requests the gateway received), and
graphql-ws and graphql-sse following a moving demo job to its end.

The snippets are files (`tests/js/readme/`) the README holds verbatim, each after a comment
naming it; the drivers (`tests/js/*.mjs`) import them, so what runs is what the README shows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.server import server_options
from gateway.settings import SimulatorSettings
from gateway.simulator import create_simulator_app
from tests.api.conftest import GatewayServer, StartGateway, embedded_settings
from tests.api.test_moving_demo import cover_run
from tests.observe.scrape import scrape, value
from tests.servers import SimulatorServer, run_asgi_server
from tests.support.node import JS_DIR, run_node

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = JS_DIR / "readme"
#: A snippet in the README: the comment naming its file, then the fenced block.
INCLUDED = re.compile(r"<!-- (tests/js/readme/[\w.-]+) -->\n```js\n(.*?)```\n", re.DOTALL)


def test_the_readme_holds_each_snippet_file_verbatim() -> None:
    included = dict(INCLUDED.findall((ROOT / "README.md").read_text()))
    files = {
        str(path.relative_to(ROOT)): path.read_text() for path in sorted(SNIPPETS.glob("*.mjs"))
    }
    assert set(included) == set(files)
    for name, text in files.items():
        assert included[name] == text, f"README.md and {name} differ"


# --- Apollo Client --------------------------------------------------------------------------------


def queries_answered(gateway: GatewayServer) -> float:
    """The queries the gateway has answered so far, by its own count."""
    return value(
        scrape(gateway.url), "mpsgw_graphql_requests_total", operation_type="query", outcome="ok"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "sent"),
    # Requests sent after each step: jobs, job (cached), node (cached), job (not cached), job
    # (now cached). The bare cache sends every query but the repeated one.
    [("readme", [1, 1, 1, 2, 2]), ("plain", [1, 2, 3, 4, 4])],
)
def test_apollo_client_answers_job_and_node_from_its_cache(
    gateway: GatewayServer, simulator: SimulatorServer, setup: str, sent: list[int]
) -> None:
    first, second, third = simulator.demo_ids()[:3]
    before = queries_answered(gateway)
    steps: Any = run_node("apollo-cache.mjs", [gateway.graphql_url, setup, first, second, third])
    received = queries_answered(gateway) - before

    assert [step["requests"] for step in steps] == sent
    assert received == sent[-1]
    jobs = {job["id"]: job for job in steps[0]["data"]["jobs"]}
    assert set(jobs) == {first, second}
    # What the cache answered is what the gateway said.
    assert steps[1]["data"] == {"job": jobs[first]}
    assert steps[2]["data"] == {"node": jobs[second]}
    assert steps[3]["data"]["job"]["id"] == third
    assert steps[4]["data"] == steps[3]["data"]


# --- graphql-ws and graphql-sse -------------------------------------------------------------------

#: Seconds of each phase of the moving demo (QUEUING, ANALYSING, finished): long enough for a
#: Node.js client to start within the first.
PHASE = 3.0


@pytest.fixture
def embedded() -> Iterator[GatewayServer]:
    """An embedded gateway whose simulator's demo jobs move every `PHASE` seconds."""
    settings = embedded_settings(cache_running_ttl=0.1)
    simulator_app = create_simulator_app(SimulatorSettings(demo_phase_seconds=PHASE))
    app = create_app(settings, simulator=simulator_app)
    with run_asgi_server(app, lifespan="on", **server_options(settings)) as url:
        yield GatewayServer(url=url, settings=settings)


async def queuing_cover_run(gateway: GatewayServer) -> str:
    """The id of a Cover run that is Queuing, with most of its phase left."""
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(400):
            run = await cover_run(http, gateway)
            if run["state"] == "Queuing" and run["cycle"]["stateEndsInSeconds"] >= PHASE / 2:
                job_id: str = run["id"]
                return job_id
            await asyncio.sleep(0.05)
    pytest.fail(f"No Cover run was found Queuing: {run}")


def url_of(gateway: GatewayServer, transport: str) -> str:
    url = gateway.graphql_url
    return url.replace("http://", "ws://") if transport == "ws" else url


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_moving_demo_job_is_followed_to_its_end(
    embedded: GatewayServer, transport: str
) -> None:
    job_id = await queuing_cover_run(embedded)
    seen: Any = await asyncio.to_thread(
        run_node, "follow-job.mjs", [transport, url_of(embedded, transport), job_id]
    )

    assert "errors" not in seen, seen
    events = seen["events"]
    states = [event["state"] for event in events]
    # The job now, then each change (a slow start may miss QUEUING), ending finished.
    assert states in (["QUEUING", "ANALYSING", "SUCCESS"], ["ANALYSING", "SUCCESS"])
    assert [event["isFinished"] for event in events] == [False] * (len(events) - 1) + [True]
    assert {event["id"] for event in events} == {job_id}
    assert events[-1]["result"]["code"] == "Success"
    assert len(events[-1]["result"]["files"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_a_failure_reaches_the_snippet_as_coded_errors(
    start_gateway: StartGateway, transport: str
) -> None:
    with start_gateway() as gateway:
        seen: Any = run_node("follow-job.mjs", [transport, url_of(gateway, transport), "not/an id"])
    assert seen["events"] == []
    [error] = seen["errors"]
    assert error["extensions"]["code"] == "INVALID_JOB_ID"
    assert error["extensions"]["jobId"] == "not/an id"
