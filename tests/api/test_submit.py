"""submitJob against a real gateway and a real simulator on real ports: the new job, the checks
made before any upstream call, idempotency keys (one process, and two sharing Redis), the submit
budget, a throttled call retried, and a lost answer that is never retried blindly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis

from gateway.api.context import Context
from gateway.api.schema import build_schema
from gateway.api.views import JobViews
from gateway.callers.caller import Caller, Scope
from gateway.mps.client import MpsClient
from gateway.mps.signing import RpcSignatureV1
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
    SimulatorSettings,
)
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.api.test_subscriptions import UPDATES, graphql_ws, subscribe
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import CLIENT_TIMEOUT, REDIS_URL, unique_prefix

SUBMIT = """
mutation($input: SubmitJobInput!) {
  submitJob(input: $input) {
    replayed
    job { id state functionName userData params input { bucket key } output { key isTemplate } }
  }
}
"""
IN = "oss://media.oss-cn-hangzhou.aliyuncs.com/in/face.jpg"
OUT = "oss://media.oss-cn-hangzhou.aliyuncs.com/out/{source}-{sequenceId}.gif"


def job_input(**overrides: Any) -> dict[str, Any]:
    return {
        "functionName": "ImageCartoonize",
        "input": IN,
        "output": OUT,
        "params": {"mode": "gif"},
        "userData": "order 42",
        **overrides,
    }


def submit_stats(simulator: SimulatorServer) -> dict[str, int]:
    action: dict[str, int] = simulator.stats()["actions"]["SubmitIProductionJob"]
    return action


async def submit(
    http: httpx.AsyncClient,
    gateway: GatewayServer | GatewayProcess,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    response = await http.post(
        gateway.graphql_url,
        json={"query": SUBMIT, "variables": {"input": job_input(**overrides)}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    for error in body.get("errors", []):
        error["extensions"].pop("requestId")
    return body


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body["data"] is None, body
    (error,) = body["errors"]
    assert error["path"] == ["submitJob"]
    extensions: dict[str, Any] = error["extensions"]
    return extensions


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    # A short lifecycle, so that a subscription sees the job finish.
    return SimulatorSettings(qps=100, queue_seconds=0.5, run_seconds=0.5)


@pytest.mark.slow
async def test_a_submitted_job_is_queuing_then_followed_to_success(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # A running ttl far longer than the test: only the snapshot the submit primed can answer.
    with start_gateway(cache_running_ttl=60.0) as gateway:
        body = await submit(http, gateway)
        queries = simulator.query_stats()["calls"]
        job = body["data"]["submitJob"]["job"]
        asked = await graphql(
            http, gateway, "query($id: ID!) { job(id: $id) { id state } }", {"id": job["id"]}
        )
        assert simulator.query_stats()["calls"] == queries
    assert body == {
        "data": {
            "submitJob": {
                "replayed": False,
                "job": {
                    "id": job["id"],
                    "state": "QUEUING",
                    "functionName": "ImageCartoonize",
                    "userData": "order 42",
                    "params": {"mode": "gif"},
                    "input": {"bucket": "media", "key": "in/face.jpg"},
                    "output": {"key": "out/{source}-{sequenceId}.gif", "isTemplate": True},
                },
            }
        }
    }
    assert asked == {"data": {"job": {"id": job["id"], "state": "QUEUING"}}}
    assert submit_stats(simulator)["calls"] == 1
    assert [entry["source"] for entry in simulator.jobs() if entry["id"] == job["id"]] == [
        "submitted"
    ]

    with start_gateway() as gateway:
        async with graphql_ws(gateway) as socket:
            messages = await subscribe(socket, UPDATES, {"id": job["id"], "interval": 0.5})
    states = [m["payload"]["data"]["jobUpdates"]["state"] for m in messages if m["type"] == "next"]
    # Each change once, in order; the first may already be past QUEUING on a slow machine.
    assert states[-1] == "SUCCESS"
    assert states == sorted(set(states), key=["QUEUING", "ANALYSING", "SUCCESS"].index)
    assert messages[-1] == {"id": "1", "type": "complete"}


@pytest.mark.slow
async def test_the_upstream_is_counted_in_metrics(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway() as gateway:
        body = await submit(http, gateway)
        metrics = (await http.get(f"{gateway.url}/metrics")).text
    assert "errors" not in body, body
    assert 'mpsgw_upstream_calls_total{action="SubmitIProductionJob",outcome="ok"} 1.0' in metrics
    assert 'mpsgw_budget_limit{action="SubmitIProductionJob"} 100.0' in metrics


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"functionName": ""}, "input.functionName"),
    ({"functionName": "Image Cartoonize"}, "input.functionName"),
    ({"functionName": "A" * 65}, "input.functionName"),
    ({"input": "https://media.oss-cn-hangzhou.aliyuncs.com/in/face.jpg"}, "input.input"),
    ({"input": "oss://media.oss-cn-shanghai.aliyuncs.com/in/face.jpg"}, "input.input"),
    ({"input": "oss://media.oss-cn-hangzhou-internal.aliyuncs.com/in.jpg"}, "input.input"),
    ({"input": "oss://media.oss-cn-hangzhou.aliyuncs.com/"}, "input.input"),
    ({"input": "oss://media.oss-cn-hangzhou.aliyuncs.com/" + "k" * 1024}, "input.input"),
    ({"input": " oss://media.oss-cn-hangzhou.aliyuncs.com/in.jpg"}, "input.input"),
    ({"output": "oss://Not_A_Bucket/out.jpg"}, "input.output"),
    ({"output": "/out/{source}.jpg"}, "input.output"),
    ({"params": [1, 2]}, "input.params"),
    ({"params": "mode=gif"}, "input.params"),
    ({"params": {"pad": "x" * 9000}}, "input.params"),
    ({"userData": "x" * 1025}, "input.userData"),
    ({"userData": "é" * 513}, "input.userData"),
    ({"pipelineId": "a b"}, "input.pipelineId"),
    ({"pipelineId": "p" * 65}, "input.pipelineId"),
    ({"notifyUrl": "https://example.com/hook"}, "input.notifyUrl"),
    ({"notifyUrl": "mns://1234.mns.cn-hangzhou.aliyuncs.com/other/q"}, "input.notifyUrl"),
    ({"modelId": "m/1"}, "input.modelId"),
    ({"scheduleParams": "x" * 1025}, "input.scheduleParams"),
    ({"scheduleParams": "a\nb"}, "input.scheduleParams"),
    ({"idempotencyKey": ""}, "input.idempotencyKey"),
    ({"idempotencyKey": "has space"}, "input.idempotencyKey"),
    ({"idempotencyKey": "k" * 256}, "input.idempotencyKey"),
]


@pytest.mark.slow
async def test_every_invalid_field_is_refused_before_any_upstream_call(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    for overrides, argument in INVALID:
        body = await submit(http, gateway, **overrides)
        assert error_of(body) == {"code": "INVALID_ARGUMENT", "argument": argument}, overrides
        assert body["errors"][0]["message"].startswith(f"Expected {argument} to ")
    for header, argument in [("", "Idempotency-Key"), ("a b", "Idempotency-Key")]:
        body = await submit(http, gateway, headers={"Idempotency-Key": header})
        assert error_of(body) == {"code": "INVALID_ARGUMENT", "argument": argument}
    body = await submit(http, gateway, headers={"Idempotency-Key": "a"}, idempotencyKey="b")
    assert error_of(body) == {"code": "INVALID_ARGUMENT", "argument": "input.idempotencyKey"}
    assert submit_stats(simulator)["calls"] == 0


@pytest.mark.slow
async def test_every_documented_parameter_reaches_the_upstream(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    """The longest userData that fits, a bucket-only URL placed in the gateway's region, and the
    optional parameters, all accepted and sent (the query answer shows what was stored)."""
    body = await submit(
        http,
        gateway,
        input="oss://media/in/face.jpg",
        userData="x" * 1024,
        pipelineId="0123456789abcdef0123456789abcdef",
        notifyUrl="mns://1234567890.mns.cn-hangzhou.aliyuncs.com/queues/done-jobs",
        modelId="model-1.2",
        scheduleParams="{}",
    )
    assert "errors" not in body, body
    job_id = body["data"]["submitJob"]["job"]["id"]
    auth = RpcSignatureV1(SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET)
    async with httpx.AsyncClient(base_url=simulator.url, auth=auth) as upstream:
        job = await MpsClient(upstream).query_job(job_id)
    assert job is not None
    assert job.raw["Input"] == IN
    assert job.raw["PipelineId"] == "0123456789abcdef0123456789abcdef"
    assert job.user_data == "x" * 1024


@pytest.mark.slow
async def test_the_same_key_answers_the_same_job_with_one_upstream_call(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    key = uuid.uuid4().hex
    first = await submit(http, gateway, idempotencyKey=key)
    again = await submit(http, gateway, idempotencyKey=key)
    by_header = await submit(http, gateway, headers={"Idempotency-Key": key})
    other = await submit(http, gateway, idempotencyKey=key, userData="order 43")
    fresh = await submit(http, gateway, idempotencyKey=uuid.uuid4().hex)

    job_id = first["data"]["submitJob"]["job"]["id"]
    assert first["data"]["submitJob"]["replayed"] is False
    for body in (again, by_header):
        assert body["data"]["submitJob"]["replayed"] is True
        assert body["data"]["submitJob"]["job"]["id"] == job_id
    assert error_of(other) == {"code": "IDEMPOTENCY_KEY_REUSED"}
    assert fresh["data"]["submitJob"]["job"]["id"] != job_id
    assert submit_stats(simulator)["calls"] == 2


@pytest.mark.slow
async def test_concurrent_duplicates_wait_for_the_first(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # A slow upstream: every duplicate arrives while the first submission is under way.
    simulator.set_faults(latencyMs=300)
    key = uuid.uuid4().hex
    bodies = await asyncio.gather(*(submit(http, gateway, idempotencyKey=key) for _ in range(8)))
    ids = {body["data"]["submitJob"]["job"]["id"] for body in bodies}
    replayed = [body["data"]["submitJob"]["replayed"] for body in bodies]
    assert len(ids) == 1
    assert sorted(replayed) == [False] + [True] * 7
    assert submit_stats(simulator)["calls"] == 1


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = unique_prefix()
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.slow
async def test_two_gateway_processes_sharing_redis_submit_a_key_once(
    simulator: SimulatorServer, http: httpx.AsyncClient, prefix: str
) -> None:
    simulator.set_faults(latencyMs=300)
    variables = {
        "GATEWAY_MPS_ENDPOINT": simulator.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        "GATEWAY_REDIS_URL": REDIS_URL,
        "GATEWAY_REDIS_PREFIX": prefix,
        "GATEWAY_REDIS_TIMEOUT": str(CLIENT_TIMEOUT),
    }
    key = uuid.uuid4().hex
    with GatewayProcess(variables, "gateway-a") as a, GatewayProcess(variables, "gateway-b") as b:
        bodies = await asyncio.gather(
            *(submit(http, gateway, idempotencyKey=key) for gateway in (a, b, a, b))
        )
        later = await submit(http, b, idempotencyKey=key)
        reused = await submit(http, a, idempotencyKey=key, functionName="Cover")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            records = list(client.scan_iter(match=f"{prefix}:submit:*"))
            # The submit budget's own ledger, beside the query budget's.
            ledger = client.exists(f"{prefix}:budget:{{SubmitIProductionJob}}:slots")
        finally:
            client.close()
    ids = {body["data"]["submitJob"]["job"]["id"] for body in [*bodies, later]}
    assert len(ids) == 1, bodies
    assert later["data"]["submitJob"]["replayed"] is True
    assert error_of(reused) == {"code": "IDEMPOTENCY_KEY_REUSED"}
    assert submit_stats(simulator)["calls"] == 1
    assert len(records) == 1
    assert ledger == 1


@pytest.mark.slow
async def test_a_lost_answer_is_never_retried_and_its_key_stays_in_doubt(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # The simulator creates the job, then cuts the connection instead of answering.
    simulator.set_faults(dropRate=1.0)
    key = uuid.uuid4().hex
    lost = await submit(http, gateway, idempotencyKey=key)
    unkeyed = await submit(http, gateway)
    simulator.set_faults(dropRate=0.0)
    again = await submit(http, gateway, idempotencyKey=key)

    for body in (lost, again, unkeyed):
        assert error_of(body)["code"] == "SUBMIT_OUTCOME_UNKNOWN", body
    assert "may or may not have created the job" in lost["errors"][0]["message"]
    # Two submissions reached the upstream, once each: no retry, and none for the key again.
    assert submit_stats(simulator)["calls"] == 2
    assert len([job for job in simulator.jobs() if job["source"] == "submitted"]) == 2


@pytest.mark.slow
async def test_an_upstream_refusal_frees_the_key(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    key = uuid.uuid4().hex
    # Any name passes the gateway; the simulator knows only the documented ones.
    refused = await submit(http, gateway, idempotencyKey=key, functionName="NoSuchAlgorithm")
    again = await submit(http, gateway, idempotencyKey=key, functionName="NoSuchAlgorithm")
    for body in (refused, again):
        extensions = error_of(body)
        assert extensions["code"] == "UPSTREAM_REJECTED"
        assert extensions["upstreamCode"] == "InvalidParameter"
    # The refusal created nothing, so the key was free and the retry went upstream.
    assert submit_stats(simulator)["calls"] == 2


@pytest.mark.slow
async def test_a_throttled_submission_is_retried_and_creates_each_job_once(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # The budget allows far more than the upstream: the upstream throttles, nothing else does.
    simulator.set_faults(qps=2)
    # Retries enough to outlast the upstream's window many times over, whatever the jitter.
    settings = {"max_retries": 10, "retry_base_delay": 0.5, "retry_max_delay": 2.0}
    keys = [uuid.uuid4().hex for _ in range(5)]
    with start_gateway(submit_qps=50, request_deadline=120.0, **settings) as gateway:
        bodies = await asyncio.gather(*(submit(http, gateway, idempotencyKey=k) for k in keys))
        throttled = submit_stats(simulator)
        simulator.set_faults(qps=100)
        again = await asyncio.gather(*(submit(http, gateway, idempotencyKey=k) for k in keys))
    for body in bodies:
        assert "errors" not in body, body
        assert body["data"]["submitJob"]["replayed"] is False
    ids = [body["data"]["submitJob"]["job"]["id"] for body in bodies]
    assert len(set(ids)) == 5
    # Throttled calls happened, and were retried until each submission was answered.
    assert throttled["throttled"] > 0
    assert throttled["calls"] == 5 + throttled["throttled"]
    # A throttled call created nothing: one job per submission.
    assert len([job for job in simulator.jobs() if job["source"] == "submitted"]) == 5
    # Each key settled on its job: answered again without a call.
    assert [body["data"]["submitJob"]["job"]["id"] for body in again] == ids
    assert all(body["data"]["submitJob"]["replayed"] for body in again)
    assert submit_stats(simulator)["calls"] == throttled["calls"]


@pytest.mark.slow
async def test_a_throttle_past_the_retries_answers_throttled_and_frees_the_key(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    simulator.set_faults(qps=1)
    key = uuid.uuid4().hex
    with start_gateway(submit_qps=50, max_retries=0) as gateway:
        # The first takes the upstream's one call this second; the keyed one is throttled.
        first = await submit(http, gateway)
        refused = await submit(http, gateway, idempotencyKey=key)
        simulator.set_faults(qps=100)
        again = await submit(http, gateway, idempotencyKey=key)
    assert "errors" not in first, first
    extensions = error_of(refused)
    assert extensions["code"] == "UPSTREAM_THROTTLED"
    assert extensions["upstreamCode"].startswith("Throttling")
    assert extensions["retryAfter"] >= 0
    # Nothing was created, so the key was free: the next submission with it made the job.
    assert again["data"]["submitJob"]["replayed"] is False
    assert len([job for job in simulator.jobs() if job["source"] == "submitted"]) == 2


@pytest.mark.slow
async def test_the_submit_budget_is_its_own_and_never_exceeded(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway(submit_qps=2) as gateway:
        # Paced: all are served, never more than two in any rolling second upstream.
        paced = await asyncio.gather(*(submit(http, gateway) for _ in range(5)))
        # Short deadlines: what cannot get a slot in time is refused at once, with a hint.
        hurried = await asyncio.gather(
            *(submit(http, gateway, headers={"x-request-timeout": "0.2"}) for _ in range(6))
        )
        # Queries have their own budget: still served.
        query = await graphql(http, gateway, '{ job(id: "0000") { id } }')
    for body in paced:
        assert "errors" not in body, body
    refusals = [error_of(body) for body in hurried if body.get("errors")]
    assert refusals, hurried
    for extensions in refusals:
        # A hint of when a slot frees (0 when one was freeing as the deadline came).
        assert extensions["code"] == "BUDGET_EXHAUSTED"
        assert extensions["retryAfter"] >= 0
    assert query == {"data": {"job": None}}
    stats = submit_stats(simulator)
    assert stats["throttled"] == 0
    assert stats["peakWindow"] <= 2


async def test_a_caller_without_the_submit_scope_is_forbidden() -> None:
    """The scope is checked first: no submitter (hence no upstream) is even reached."""
    schema = build_schema(GatewaySettings())
    reader = Caller(name="viewer", tenant="acme", scopes=frozenset({Scope.READ}), method="jwt")
    context = Context(
        fetcher=cast(Any, None),
        deadline=time.monotonic() + 10,
        max_ids=100,
        views=JobViews(),
        timeout=10,
        max_page_size=100,
        caller=reader,
    )
    result = await schema.execute(
        SUBMIT, variable_values={"input": job_input()}, context_value=context
    )
    assert result.data is None
    assert result.errors is not None
    [error] = result.errors
    assert error.extensions == {"code": "FORBIDDEN", "scope": "jobs:submit"}
    assert error.message == "Expected a caller with the scope jobs:submit to submit jobs."
