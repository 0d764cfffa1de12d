"""Logs: JSON lines of a real `python -m gateway serve`, request ids in every line of a
request, the access log, warnings that a flood cannot multiply, and one warning per Redis
switch."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest

from gateway import errors
from gateway.instruments import Instruments
from gateway.mps.client import QUERY_ACTION
from gateway.observe.logs import LogLimiter, configure_logging
from gateway.observe.metrics import Metrics
from gateway.observe.requests import RequestInfo, _current
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID
from tests.api.conftest import StartGateway, answer
from tests.observe.scrape import scrape, value
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.ports import HOST, candidate_port

QUERY = "query Job($id: ID!) { job(id: $id) { id } }"


@pytest.mark.slow
def test_json_lines_carry_the_request_id_and_warnings_are_rate_limited(
    simulator: SimulatorServer,
) -> None:
    """A gateway whose secret the upstream refuses: three requests, three access lines, and
    one warning (in the first request, with its id); every line one JSON object."""
    variables = {
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_MPS_ENDPOINT": simulator.url,
        "GATEWAY_MAX_RETRIES": "0",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "not-the-secret",
    }
    ids = simulator.demo_ids()[:3]
    given = ["client-chosen.id:1", "x" * 129, None]  # usable, too long, none
    answers = []
    with GatewayProcess(variables) as gateway:
        for job_id, request_id in zip(ids, given, strict=True):
            headers = {} if request_id is None else {"x-request-id": request_id}
            response = httpx.post(
                gateway.graphql_url,
                json={"query": QUERY, "variables": {"id": job_id}},
                headers=headers,
            )
            answers.append(response)
        gateway.stop()
        output = gateway.output()

    request_ids = [response.headers["x-request-id"] for response in answers]
    assert request_ids[0] == "client-chosen.id:1"
    assert len(request_ids[1]) == len(request_ids[2]) == 32  # new ones, never the bad one
    for response in answers:
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "UPSTREAM_AUTH_FAILED"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]

    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    for line in lines:
        line.pop("time")
        line.pop("duration_ms", None)
    # (The probes that waited for the server to listen have access lines too.)
    served = [line for line in lines if "request_id" in line and line.get("path") != "/healthz"]
    started = next(line["message"] for line in lines if line["logger"] == "gateway.app")
    assert started.startswith("Gateway started")
    assert served == [
        {
            "level": "WARNING",
            "logger": "gateway.instruments",
            "message": f"The upstream refused the gateway's credentials for {QUERY_ACTION} "
            "(SignatureDoesNotMatch). RequestId "
            + answers[0].json()["errors"][0]["extensions"]["upstreamRequestId"]
            + "; check the access key, its permissions and this host's clock (1 such "
            "answers since the last such warning, which comes at most once a minute)",
            "request_id": request_ids[0],
        },
        *(
            {
                "level": "INFO",
                "logger": "gateway.access",
                "message": line_message,
                "request_id": request_id,
                "method": "POST",
                "path": "/graphql",
                "status": 200,
                "operation": "query Job",
            }
            for request_id, line_message in zip(request_ids, _access_messages(served), strict=True)
        ),
    ]
    assert "not-the-secret" not in output


def _access_messages(lines: list[dict[str, Any]]) -> list[str]:
    messages = [line["message"] for line in lines if line["logger"] == "gateway.access"]
    for message in messages:
        method, path, status, milliseconds, unit, *operation = message.split(" ")
        assert (method, path, status, unit, operation) == (
            "POST",
            "/graphql",
            "200",
            "ms",
            ["query", "Job"],
        )
        float(milliseconds)
    return messages


def test_text_lines_name_the_request_or_a_dash() -> None:
    stream = io.StringIO()
    configure_logging("INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        logger = logging.getLogger("gateway.test")
        logger.info("outside %s", "a request")
        token = _current.set(RequestInfo("abc"))
        try:
            logger.warning("inside")
        finally:
            _current.reset(token)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    lines = [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()]
    assert lines == [
        "INFO gateway.test [-] outside a request",
        "WARNING gateway.test [abc] inside",
    ]


def test_upstream_failures_are_warned_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    instruments = Instruments(Metrics(), warnings=LogLimiter(clock=lambda: now[0]))
    refused = errors.UpstreamAuthFailed(
        "The upstream refused the gateway's credentials for X (Forbidden.RAM).",
        upstream_code="Forbidden.RAM",
    )
    garbled = errors.UpstreamBadResponse("X answered HTTP 200 with a body that is no object.")
    for at, error in [(0, refused), (1, refused), (2, garbled), (59, refused), (60, refused)]:
        now[0] = at
        instruments.upstream.called(QUERY_ACTION, seconds=0.01, error=error, request_id="R")

    assert [(r.levelname, r.getMessage().split(" RequestId ")[0]) for r in caplog.records] == [
        ("WARNING", refused.message),
        ("WARNING", garbled.message),
        ("WARNING", refused.message),
    ]
    counts = [r.getMessage().split("(")[-1].split(" ")[0] for r in caplog.records]
    assert counts == ["1", "1", "3"]


async def test_one_warning_per_redis_switch(
    start_gateway: StartGateway,
    simulator: SimulatorServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis that never answers: however many requests find it down, the process says so once
    (and /metrics says so all along)."""
    dead = f"redis://{HOST}:{candidate_port()}/0"  # nothing listens there
    ids = simulator.demo_ids()
    with start_gateway(redis_url=dead, redis_timeout=0.2) as gateway:
        for job_id in ids[:5]:
            response = await http.post(
                gateway.graphql_url, json={"query": QUERY, "variables": {"id": job_id}}
            )
            assert answer(response) == {"data": {"job": {"id": job_id}}}
        text = scrape(gateway.url)

    switches = [
        record.getMessage().split(" (")[0]
        for record in caplog.records
        if record.name == "gateway.shared.switch"
    ]
    assert switches == ["Redis unreachable"]
    assert [value(text, "mpsgw_failover_active", part=part) for part in ("budget", "cache")] == [
        1,
        1,
    ]
