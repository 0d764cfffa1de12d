"""Jobs through a real gateway in front of a real simulator: typed fields, batching, budget."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import json5
import pytest

from gateway.settings import SimulatorSettings
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.servers import SimulatorServer

JOB_FIELDS = """
    id state rawState isFinished functionName algorithm inputUrl outputTemplate pipelineId
    params userData requestId
    input { bucket endpoint region key url }
    output { bucket key isTemplate url }
    result { code message succeeded data files { key name bucket url ossUrl } }
"""


def upstream_fields(simulator: SimulatorServer, job_id: str) -> dict[str, str]:
    fields: dict[str, str] = httpx.get(f"{simulator.url}/_simulator/jobs/{job_id}").json()["fields"]
    return fields


def expected_job(fields: dict[str, str], request_id: str) -> dict[str, Any]:
    """What the gateway must make of one upstream answer, derived from the raw fields."""
    state = {"Queuing": "QUEUING", "Analysing": "ANALYSING", "Success": "SUCCESS", "Fail": "FAIL"}
    raw_result = fields.get("Result") or ""
    output = fields["Output"]
    output_host, output_key = output.removeprefix("oss://").split("/", 1)
    bucket = output_host.split(".", 1)[0]
    result = None
    if raw_result:
        decoded = json.loads(raw_result)
        data = json.loads(decoded["Data"]) if decoded.get("Data") else None
        files = [entry["file"] for entry in (data or {}).get("result", [])]
        result = {
            "code": decoded["Code"],
            "message": decoded.get("Message"),
            "succeeded": decoded["Code"] == "Success",
            "data": data,
            "files": [
                {
                    "key": key,
                    "name": key.rsplit("/", 1)[-1],
                    "bucket": bucket,
                    "url": f"https://{output_host}/{key}",
                    "ossUrl": f"oss://{output_host}/{key}",
                }
                for key in files
            ],
        }
    input_host, input_key = fields["Input"].removeprefix("oss://").split("/", 1)
    return {
        "id": fields["JobId"],
        "state": state[fields["State"]],
        "rawState": fields["State"],
        "isFinished": fields["State"] in ("Success", "Fail"),
        "functionName": fields["FunctionName"],
        # GraphQL enum names: VideoH2V -> VIDEO_H2V.
        "algorithm": re.sub(r"(?<=[a-z])(?=[A-Z])", "_", fields["FunctionName"]).upper(),
        "inputUrl": fields["Input"],
        "outputTemplate": output,
        "pipelineId": fields.get("PipelineId"),
        "params": json5.loads(fields["JobParams"]) if fields.get("JobParams") else None,
        "userData": None if fields.get("UserData") in (None, "", "null") else fields["UserData"],
        "requestId": request_id,
        "input": {
            "bucket": input_host.split(".", 1)[0],
            "endpoint": input_host.split(".", 1)[1],
            "region": input_host.split(".", 1)[1].split(".")[0].removeprefix("oss-"),
            "key": input_key,
            "url": f"https://{input_host}/{input_key}",
        },
        "output": {
            "bucket": bucket,
            "key": output_key,
            "isTemplate": "{" in output_key,
            "url": None if "{" in output_key else f"https://{output_host}/{output_key}",
        },
        "result": result,
    }


async def test_every_demo_job_answers_with_typed_fields(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    listing = [job for job in simulator.jobs() if job["quirk"] is None]
    ids = [job["id"] for job in listing]
    assert len(ids) >= 18

    body = await graphql(
        http, gateway, f"query($ids: [ID!]!) {{ jobs(ids: $ids) {{ {JOB_FIELDS} }} }}", {"ids": ids}
    )

    assert "errors" not in body
    answers = body["data"]["jobs"]
    assert [answer["id"] for answer in answers] == ids
    for answer in answers:
        # Each snapshot carries the RequestId of its own upstream call: present, and distinct.
        assert answer["requestId"]
        assert answer == expected_job(upstream_fields(simulator, answer["id"]), answer["requestId"])
    assert len({answer["requestId"] for answer in answers}) == len(answers)


async def test_the_documented_example_job(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    example_id = simulator.demo_ids()[0]
    body = await graphql(
        http,
        gateway,
        "query($id: ID!) { job(id: $id) { id state functionName params userData "
        "result { code files { key name contentType bucket url } } } }",
        {"id": example_id},
    )
    host = "example-bucket.oss-cn-hangzhou.aliyuncs.com"
    assert body == {
        "data": {
            "job": {
                "id": example_id,
                "state": "SUCCESS",
                "functionName": "ImageCartoonize",
                "params": {"mode": "gif"},
                "userData": None,
                "result": {
                    "code": "Success",
                    "files": [
                        {
                            "key": f"iproduction/test-{kind}.jpg",
                            "name": f"test-{kind}.jpg",
                            "contentType": "image/jpeg",
                            "bucket": "example-bucket",
                            "url": f"https://{host}/iproduction/test-{kind}.jpg",
                        }
                        for kind in ("result", "origin")
                    ],
                },
            }
        }
    }


async def test_unknown_job_is_null_without_error(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = await graphql(http, gateway, '{ job(id: "0123456789abcdef0123456789abcdef") { id } }')
    assert body == {"data": {"job": None}}


async def test_terminal_jobs_are_served_from_cache(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    example_id = simulator.demo_ids()[0]
    query = "query($id: ID!) { job(id: $id) { id requestId ageSeconds } }"
    first = await graphql(http, gateway, query, {"id": example_id})
    calls = simulator.query_stats()["calls"]

    second = await graphql(http, gateway, query, {"id": example_id})

    assert simulator.query_stats()["calls"] == calls
    # The same snapshot: same upstream RequestId, and it ages.
    assert second["data"]["job"]["requestId"] == first["data"]["job"]["requestId"]
    assert second["data"]["job"]["ageSeconds"] >= first["data"]["job"]["ageSeconds"]


async def test_concurrent_queries_for_the_same_ids_cost_one_call_per_id(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = [f"{n:032x}" for n in range(40)] + simulator.demo_ids()[:10]
    query = "query($ids: [ID!]!) { jobs(ids: $ids) { id state } }"
    simulator.reset_stats()

    # Snapshots of running and unknown jobs kept longer than a busy machine takes to serve the
    # four queries: a query that comes late is served, not sent upstream again.
    with start_gateway(cache_running_ttl=60.0, cache_not_found_ttl=60.0) as gateway:
        bodies = await asyncio.gather(
            *(graphql(http, gateway, query, {"ids": ids + ids[:5]}) for _ in range(4))
        )

    assert all("errors" not in body for body in bodies)
    assert all(body == bodies[0] for body in bodies)
    assert simulator.query_stats()["calls"] == len(ids)


@pytest.mark.slow
@pytest.mark.parametrize("simulator_settings", [SimulatorSettings(qps=50)])
async def test_300_ids_under_a_limit_of_50_per_second_are_never_throttled(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = [f"{n:032x}" for n in range(1, 301)]
    query = "query($ids: [ID!]!) { jobs(ids: $ids) { id } }"
    with start_gateway(upstream_qps=50, request_deadline=30) as gateway:
        simulator.reset_stats()

        bodies = await asyncio.gather(
            *(graphql(http, gateway, query, {"ids": ids[i : i + 100]}) for i in range(0, 300, 100))
        )

    assert bodies == [{"data": {"jobs": [None] * 100}}] * 3
    stats = simulator.query_stats()
    assert stats["calls"] == 300
    assert stats["throttled"] == 0
    assert 0 < stats["peakWindow"] <= 50


async def test_node_refetches_a_job_as_relay_does(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = simulator.demo_ids()[0]
    body = await graphql(
        http,
        gateway,
        "query($id: ID!) { node(id: $id) { __typename id ... on Job { functionName } } }",
        {"id": job_id},
    )
    assert body == {
        "data": {"node": {"__typename": "Job", "id": job_id, "functionName": "ImageCartoonize"}}
    }
