"""Admission on a real gateway served as `python -m gateway serve` serves it: a request's
deadline starts at its first byte, a request out of time or over the concurrency limit is
refused before it runs, and each refusal is counted."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.api.conftest import StartGateway, answer
from tests.observe.scrape import scrape, value
from tests.rawhttp import PATIENCE, parse_responses, raw_connection, request_head
from tests.servers import SimulatorServer
from tests.support.waiting import eventually

QUERY = json.dumps({"query": "{ __typename }"}).encode()
JOB = "query Job($id: ID!) { job(id: $id) { id state } }"


@pytest.mark.slow
async def test_the_deadline_starts_at_the_first_byte_not_when_the_app_sees_the_request(
    start_gateway: StartGateway,
) -> None:
    with start_gateway() as gateway:
        head = request_head(
            "POST",
            "/graphql",
            content_type="application/json",
            content_length=len(QUERY),
            x_request_timeout="1",
        )
        async with raw_connection(gateway.url) as (reader, writer):
            # Half the headers, then a pause longer than the request's whole deadline: its
            # clock runs from the first byte, so it is out of time before the app sees it.
            writer.write(head[:20])
            await writer.drain()
            await asyncio.sleep(2.0)
            writer.write(head[20:] + QUERY)
            await writer.drain()
            data = await asyncio.wait_for(reader.readuntil(b"}]}"), PATIENCE)
        [response] = parse_responses(data)
        error = response.json()["errors"][0]
        text = scrape(gateway.url)

    assert response.status == 200
    assert error["extensions"]["code"] == "DEADLINE_EXCEEDED"
    assert error["extensions"]["retryAfter"] == 1.0
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert value(text, "mpsgw_requests_shed_total", reason="deadline") == 1
    assert value(text, "mpsgw_requests_shed_total", reason="overloaded") == 0
    assert value(text, "mpsgw_graphql_requests_total", operation_type="none", outcome="error") == 1
    # Not counted a second time as a request refused with a 4xx, nor as a query.
    assert (
        sum(
            value(text, "mpsgw_graphql_requests_total", operation_type=kind, outcome=outcome)
            for kind in ("query", "none")
            for outcome in ("ok", "client_error", "error")
        )
        == 1
    )


@pytest.mark.slow
async def test_over_the_concurrency_limit_a_request_is_refused_while_another_runs(
    start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id = simulator.demo_ids()[0]
    # The upstream answers after 2 s: the first request runs (holds the one place) until then.
    simulator.set_faults(latencyMs=2000)
    simulator.reset_stats()
    try:
        with start_gateway(max_concurrent_requests=1) as gateway:
            async with httpx.AsyncClient(timeout=PATIENCE) as http:
                first = asyncio.ensure_future(
                    http.post(gateway.graphql_url, json={"query": JOB, "variables": {"id": job_id}})
                )
                await eventually(
                    lambda: simulator.query_stats()["calls"] >= 1, "the first request's call"
                )
                refused = await http.post(gateway.graphql_url, json={"query": "{ __typename }"})
                ran = await first
                after = await http.post(gateway.graphql_url, json={"query": "{ __typename }"})
            text = scrape(gateway.url)
    finally:
        simulator.set_faults(latencyMs=0)

    assert refused.status_code == 200
    [error] = answer(refused)["errors"]
    assert error["extensions"]["code"] == "OVERLOADED"
    assert error["extensions"]["retryAfter"] == 1.0
    assert answer(ran)["data"]["job"]["id"] == job_id
    assert answer(after) == {"data": {"__typename": "Query"}}
    assert value(text, "mpsgw_requests_shed_total", reason="overloaded") == 1
    assert value(text, "mpsgw_graphql_requests_total", operation_type="query", outcome="ok") == 2
