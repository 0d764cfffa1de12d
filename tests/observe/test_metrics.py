"""/metrics through real gateways: what one request of each kind counts, where it is served,
and the sums of `uvicorn --workers` in multiprocess mode."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import httpx
import pytest

from gateway.budget import QUERY_JOB, SUBMIT_JOB
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.observe.scrape import sample_names, samples, scrape, value
from tests.servers import SimulatorServer
from tests.support.gateway import gateway_environment
from tests.support.ports import HOST
from tests.support.processes import ServerProcess
from tests.support.waiting import wait_until

JOBS = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id state } }"


async def test_one_query_of_each_kind_is_counted_where_it_happened(
    gateway: GatewayServer, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    ids = simulator.demo_ids()[:2]
    await graphql(http, gateway, JOBS, {"ids": ids})  # fetched: 2 calls
    await graphql(http, gateway, JOBS, {"ids": ids})  # finished jobs, from memory
    await graphql(http, gateway, JOBS, {"ids": ["not an id"]})  # the client's mistake
    too_large = await http.post(gateway.graphql_url, content=b"x" * (2 << 20))
    assert too_large.status_code == 413

    text = scrape(gateway.url)

    nonzero = {
        (name, *(f"{key}={label}" for key, label in sorted(labels))): sample
        for (name, labels), sample in samples(text).items()
        if name.startswith("mpsgw_")
        and sample
        and not name.endswith(("_bucket", "_sum", "_created"))
    }
    # The second query repeats the first: its answer is kept (body and overhead).
    assert nonzero.pop(("mpsgw_answer_cache_bytes",)) > 256
    assert nonzero == {
        ("mpsgw_answer_lookups_total", "result=miss", "tier=memory"): 3,
        ("mpsgw_graphql_requests_total", "operation_type=query", "outcome=ok"): 2,
        ("mpsgw_graphql_requests_total", "operation_type=query", "outcome=client_error"): 1,
        ("mpsgw_graphql_requests_total", "operation_type=none", "outcome=client_error"): 1,
        ("mpsgw_graphql_request_duration_seconds_count", "operation_type=query"): 3,
        ("mpsgw_upstream_calls_total", f"action={QUERY_JOB}", "outcome=ok"): 2,
        ("mpsgw_upstream_call_duration_seconds_count", f"action={QUERY_JOB}"): 2,
        ("mpsgw_budget_wait_seconds_count", f"action={QUERY_JOB}"): 2,
        ("mpsgw_budget_limit", f"action={QUERY_JOB}"): 100,
        ("mpsgw_budget_effective_limit", f"action={QUERY_JOB}"): 100,
        # SubmitIProductionJob's own budget, watched from the start.
        ("mpsgw_budget_limit", f"action={SUBMIT_JOB}"): 100,
        ("mpsgw_budget_effective_limit", f"action={SUBMIT_JOB}"): 100,
        ("mpsgw_cache_lookups_total", "result=miss", "tier=memory"): 2,
        ("mpsgw_cache_lookups_total", "result=hit", "tier=memory"): 2,
    }
    # Every series of the fixed label sets is there from the start, at zero.
    assert value(text, "mpsgw_failover_active", part="budget") == 0
    assert value(text, "mpsgw_subscriptions_active", transport="websocket") == 0
    assert value(text, "mpsgw_fetch_claim_waits_total") == 0
    assert value(text, "mpsgw_answer_lookups_total", tier="redis", result="hit") == 0
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= sample_names(text)


async def test_metrics_are_not_behind_cors_and_carry_no_request_id(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.get(
        f"{gateway.url}/metrics", headers={"origin": "https://elsewhere.example"}
    )

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "x-request-id" not in response.headers
    # The GraphQL endpoint still answers browsers.
    options = await http.options(
        gateway.graphql_url,
        headers={
            "origin": "https://elsewhere.example",
            "access-control-request-method": "POST",
        },
    )
    assert options.headers["access-control-allow-origin"] == "*"


async def test_a_metrics_port_serves_them_privately(
    start_gateway: StartGateway, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.app")
    with start_gateway(metrics_port=0) as gateway:  # 0: the system picks, the log says
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Metrics")]
        private_url = line.removeprefix("Metrics at ").removesuffix("/metrics")
        public = await http.get(f"{gateway.url}/metrics")
        private = scrape(private_url)
    # /metrics is not a route of the app: it answers as any unknown path does.
    assert public.status_code == 404
    assert value(private, "mpsgw_budget_limit", action=QUERY_JOB) == 100


@pytest.mark.slow
def test_workers_in_multiprocess_mode_answer_the_sums_of_all(tmp_path: Path) -> None:
    """`uvicorn --workers 2` as the README says: every scrape, whichever worker answers it,
    counts every request of both."""
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()

    def command(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"),
            *("--workers", "2", "--port", str(port), "--no-access-log", "--log-level", "warning"),
        ]

    def ready(port: int) -> bool:
        return httpx.get(f"http://{HOST}:{port}/healthz").status_code == 200

    environment = gateway_environment({"PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    with ServerProcess("uvicorn workers", command, ready, env=environment) as server:
        url = f"http://{HOST}:{server.port}"
        # Each worker writes its process metrics when its sampler first runs.
        wait_until(lambda: len(_pids(httpx.get(f"{url}/metrics").text)) == 2, "both workers")
        requests = 40
        for _ in range(requests):
            # A new connection each time: the workers take them in turns, as they come.
            response = httpx.post(f"{url}/graphql", json={"query": "{ __typename }"})
            assert response.status_code == 200
        for _ in range(6):
            text = httpx.get(f"{url}/metrics").text
            ok = value(text, "mpsgw_graphql_requests_total", operation_type="query", outcome="ok")
            assert ok == requests
            assert value(text, "mpsgw_budget_limit", action=QUERY_JOB) == 100
            assert len(_pids(text)) == 2


def _pids(text: str) -> set[str]:
    """The workers whose process metrics an exposition holds."""
    return {
        dict(labels)["pid"]
        for name, labels in samples(text)
        if name == "process_resident_memory_bytes"
    }
