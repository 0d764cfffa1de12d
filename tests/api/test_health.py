"""/healthz and /readyz: the status alone for anyone, the report for an operator (the admin
token on the main port, or the private metrics port), never behind CORS, never a location."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from gateway.health import without_locations
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.servers import SimulatorServer
from tests.support.gateway import ADMIN_HEADERS, ADMIN_TOKEN
from tests.support.ports import candidate_port

ORIGIN = {"origin": "https://app.example"}
REPORT_KEYS = {
    *("status", "upstream", "redis", "budget", "submitBudget", "cache", "claims", "fetcher"),
    "answers",  # the kept answers (gateway.answers)
    "upstreamConnections",  # a standalone simulator's: over TCP, as the cloud is reached
}


async def test_anyone_gets_the_status_alone(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    ready = await http.get(f"{gateway.url}/readyz")
    healthy = await http.get(f"{gateway.url}/healthz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
async def test_no_cors_for_a_page_of_another_origin(
    gateway: GatewayServer, http: httpx.AsyncClient, path: str
) -> None:
    # The same gateway answers CORS on /graphql (GATEWAY_CORS_ORIGINS defaults to *)...
    graphql = await http.options(
        gateway.graphql_url, headers={**ORIGIN, "access-control-request-method": "POST"}
    )
    assert graphql.headers["access-control-allow-origin"] == "*"
    # ...but nothing of its probes: no header lets a browser read them, no preflight passes.
    answer = await http.get(f"{gateway.url}{path}", headers={**ORIGIN, **ADMIN_HEADERS})
    preflight = await http.options(
        f"{gateway.url}{path}",
        headers={
            **ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )
    assert answer.status_code == 200
    for response in (answer, preflight):
        assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_the_admin_token_gets_the_report(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)
    report: dict[str, Any] = response.json()
    assert response.status_code == 200
    assert set(report) == REPORT_KEYS
    assert report["status"] == "ready"
    assert report["budget"]["limit"] == gateway.settings.upstream_qps


async def test_the_report_counts_upstream_connections_and_calls_reuse_them(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    ids = [f"c0bbec7100000000000000000000{n:04d}" for n in range(20)]
    for job_id in ids:
        simulator.put_job(job_id, {"JobId": job_id, "FunctionName": "Cover", "State": "Success"})
    query = "query($ids: [ID!]!) { jobs(ids: $ids) { id state } }"

    async def connections() -> dict[str, int]:
        report = (await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)).json()
        counts: dict[str, int] = report["upstreamConnections"]
        return counts

    before = await connections()
    first = await graphql(http, gateway, query, {"ids": ids[:10]})  # 10 calls at once
    after_first = await connections()
    second = await graphql(http, gateway, query, {"ids": ids[10:]})  # 10 more, once those ended
    after_second = await connections()

    assert "errors" not in first, first
    assert "errors" not in second, second
    assert before == {"opened": 0, "open": 0}
    assert 1 <= after_first["opened"] <= 10
    assert after_first["open"] == after_first["opened"]  # kept alive, not closed
    # The second batch ran on the connections the first left warm: none opened.
    assert after_second == after_first


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-of-some-length",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        "Bearer",
    ],
)
async def test_a_wrong_token_is_refused_and_told_nothing(
    gateway: GatewayServer, http: httpx.AsyncClient, authorization: str
) -> None:
    response = await http.get(f"{gateway.url}/readyz", headers={"authorization": authorization})
    body = response.json()
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHORIZED"]
    assert "budget" not in response.text
    assert ADMIN_TOKEN not in response.text


async def test_without_an_admin_token_the_main_port_reports_nothing(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway(admin_token=None) as gateway:
        response = await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_the_metrics_port_serves_the_report(
    start_gateway: StartGateway, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.app")
    with start_gateway(metrics_port=0, admin_token=None) as gateway:
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Metrics")]
        private_url = line.removeprefix("Metrics at ").removesuffix("/metrics")
        public = await http.get(f"{gateway.url}/readyz")
        private = await http.get(f"{private_url}/readyz")
        healthy = await http.get(f"{private_url}/healthz")
        metrics = await http.get(f"{private_url}/metrics")
    assert public.json() == {"status": "ready"}
    assert private.status_code == 200
    assert set(private.json()) == REPORT_KEYS
    assert healthy.json()["status"] == "ready"
    assert "mpsgw_budget_limit" in metrics.text


async def test_a_degraded_report_names_no_host(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    port = candidate_port()  # free a moment ago: nothing answers there
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    with start_gateway(redis_url=url, redis_prefix="unused") as gw:
        # The first call that needs Redis fails it over (the /readyz PING does not).
        await http.post(gw.graphql_url, json={"query": '{ job(id: "0123abcd") { id } }'})
        public = await http.get(f"{gw.url}/readyz")
        report = await http.get(f"{gw.url}/readyz", headers=ADMIN_HEADERS)
    assert (public.status_code, public.json()) == (200, {"status": "degraded"})
    last_error = report.json()["redis"]["failover"]["lastError"]
    assert last_error.startswith("ConnectionError")
    for leak in ("127.0.0.1", f":{port}", "hunter2"):
        assert leak not in report.text


@pytest.mark.parametrize(
    ("message", "scrubbed"),
    [
        (
            "ConnectionError: Error 111 connecting to 10.0.0.5:6379. Connection refused",
            "ConnectionError: Error 111 connecting to Redis. Connection refused",
        ),
        (
            "ConnectionError: Error -2 connecting to redis.internal:6380. Name unknown",
            "ConnectionError: Error -2 connecting to Redis. Name unknown",
        ),
        (
            "ConnectionError: Error 2 connecting to unix socket: /run/redis/r.sock. No such file",
            "ConnectionError: Error 2 connecting to Redis. No such file",
        ),
        (
            "TimeoutError: Timeout reading from [fd00::5]:6379",
            "TimeoutError: Timeout reading from <host>",
        ),
        ("ClusterDownError: MOVED 3999 10.0.0.7:7001", "ClusterDownError: MOVED 3999 <host>"),
        ("ReadOnlyError: see /etc/redis/redis.conf", "ReadOnlyError: see <path>"),
        ("TimeoutError: Timeout reading from socket", "TimeoutError: Timeout reading from socket"),
    ],
)  # fmt: skip
def test_errors_lose_their_locations(message: str, scrubbed: str) -> None:
    assert without_locations(message) == scrubbed
