"""Bad input and a bad upstream end in the documented error (the error table of README.md), and
nothing else breaks: a real gateway on a real port in front of a real simulator, with the
simulator's faults, planted answers and quirk jobs playing the lying or failing upstream.

Every test is bounded (`bounded`), so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar, cast

import httpx
import json5
import pytest
import strawberry
from graphql import GraphQLSyntaxError, parse, specified_rules, validate
from graphql import build_schema as build_graphql_schema
from strawberry.asgi import GraphQL

from gateway import errors
from gateway.admission import TIMEOUT_HEADER
from gateway.api.extensions import OperationPolicy
from gateway.api.schema import build_schema
from gateway.jobs.ids import validate_job_id
from gateway.model import Malformed
from gateway.mps.client import QUERY_ACTION, error_for
from gateway.mps.decode import decode_job
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID
from gateway.simulator import DroppedConnectionLogFilter
from tests.api.conftest import (
    GatewayServer,
    StartGateway,
    answer,
    graphql,
    without_request_ids,
)
from tests.api.test_jobs import JOB_FIELDS, expected_job, upstream_fields
from tests.servers import SimulatorServer, run_asgi_server

T = TypeVar("T")

JOB = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
JOBS = f"query Jobs($ids: [ID!]!) {{ jobs(ids: $ids) {{ {JOB_FIELDS} }} }}"
JOB_IDS = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id } }"
#: The form of an upstream RequestId (the simulator's, like the cloud's: an upper-case UUID).
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
BUDGET_MESSAGE = re.compile(
    r"The upstream call budget has no free slot before this request's "
    r"deadline; retry in (?P<seconds>\d+\.\d\d) s\."
)


async def bounded(awaitable: Awaitable[T], seconds: float = 20.0) -> T:
    """Fail a test that hangs instead of waiting for it forever."""
    return await asyncio.wait_for(awaitable, seconds)


def location(query: str, text: str) -> list[dict[str, int]]:
    """The GraphQL `locations` of the first `text` in `query` (leading blanks excluded)."""
    index = query.index(text) + len(text) - len(text.lstrip())
    line_start = query.rfind("\n", 0, index) + 1
    return [{"line": query.count("\n", 0, index) + 1, "column": index - line_start + 1}]


def calls(simulator: SimulatorServer) -> int:
    return simulator.query_stats()["calls"]


def unknown_id() -> str:
    """A well-formed id no simulator job has."""
    return uuid.uuid4().hex


def quirk_id(simulator: SimulatorServer, slug: str) -> str:
    """The id of the demo quirk job whose quirk starts with `slug` (see simulator/demo.py)."""
    (job_id,) = [
        job["id"] for job in simulator.jobs() if (job["quirk"] or "").startswith(f"{slug}:")
    ]
    assert isinstance(job_id, str)
    return job_id


def request_id_of(error: dict[str, Any]) -> str:
    request_id: str = error["extensions"]["upstreamRequestId"]
    assert REQUEST_ID.fullmatch(request_id), request_id
    return request_id


def by_path(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its errors in path order (graphql-core lists them as they happen)."""
    if "errors" in body:
        body["errors"].sort(key=lambda error: [(str(type(p)), p) for p in error.get("path") or ()])
    return body


def served(simulator: SimulatorServer, answer: dict[str, Any]) -> dict[str, Any]:
    """What the gateway must answer for this demo job, with the RequestId it reported."""
    request_id = answer["requestId"]
    assert REQUEST_ID.fullmatch(request_id), request_id
    return expected_job(upstream_fields(simulator, answer["id"]), request_id)


def invalid_id_message(job_id: str) -> str:
    with pytest.raises(errors.InvalidJobId) as caught:
        validate_job_id(job_id)
    return caught.value.message


# --- ids the gateway refuses before any upstream call ---------------------------------------------


@pytest.mark.parametrize("job_id", ["", "a" * 65, "a b", "../x", "abc\n", "ab%2F"], ids=repr)
async def test_a_malformed_id_is_refused_without_an_upstream_call(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient, job_id: str
) -> None:
    simulator.reset_stats()

    body = await bounded(graphql(http, gateway, JOB, {"id": job_id}))

    assert body == {
        "data": {"job": None},
        "errors": [
            {
                "message": invalid_id_message(job_id),
                "locations": location(JOB, "job("),
                "path": ["job"],
                "extensions": {"code": "INVALID_JOB_ID", "jobId": job_id},
            }
        ],
    }
    assert calls(simulator) == 0


async def test_jobs_answers_one_entry_per_id_whatever_each_id_is(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    known = simulator.demo_ids()[1]
    ids = [known, unknown_id(), "a b", known]
    simulator.reset_stats()

    body = await bounded(graphql(http, gateway, JOBS, {"ids": ids}))

    first = body["data"]["jobs"][0]
    assert body == {
        "data": {"jobs": [served(simulator, first), None, None, served(simulator, first)]},
        "errors": [
            {
                "message": invalid_id_message("a b"),
                "locations": location(JOBS, "jobs("),
                "path": ["jobs", 2],
                "extensions": {"code": "INVALID_JOB_ID", "jobId": "a b"},
            }
        ],
    }
    # One call for the known id (its duplicate shares it), one for the unknown id, none for the
    # malformed one.
    assert calls(simulator) == 2


def too_many_ids(query: str, limit: int, received: int) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [
            {
                "message": errors.TooManyIds(received=received, limit=limit).message,
                "locations": location(query, "jobs("),
                "path": ["jobs"],
                "extensions": {"code": "TOO_MANY_IDS", "limit": limit, "received": received},
            }
        ],
    }


async def test_more_ids_than_the_default_limit_cost_no_upstream_call(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    limit = gateway.settings.max_ids
    simulator.reset_stats()

    body = await bounded(graphql(http, gateway, JOB_IDS, {"ids": simulator.demo_ids() * 6}))

    assert len(simulator.demo_ids()) * 6 > limit
    assert body == too_many_ids(JOB_IDS, limit, len(simulator.demo_ids()) * 6)
    assert calls(simulator) == 0


async def test_the_id_limit_is_a_setting(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = [unknown_id() for _ in range(4)]
    with start_gateway(max_ids=3) as gateway:
        simulator.reset_stats()
        over = await bounded(graphql(http, gateway, JOB_IDS, {"ids": ids}))
        assert calls(simulator) == 0
        at_limit = await bounded(graphql(http, gateway, JOB_IDS, {"ids": ids[:3]}))

    assert over == too_many_ids(JOB_IDS, 3, 4)
    assert at_limit == {"data": {"jobs": [None, None, None]}}
    assert calls(simulator) == 3


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_huge_id_list_is_refused_before_it_is_read(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient, chunked: bool
) -> None:
    limit = gateway.settings.max_body_bytes
    payload = json.dumps(
        {"query": JOB_IDS, "variables": {"ids": [f"{n:032x}" for n in range(200_000)]}}
    ).encode()
    assert len(payload) > limit

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    simulator.reset_stats()
    response = await bounded(
        http.post(
            gateway.graphql_url,
            content=chunks() if chunked else payload,
            headers={"content-type": "application/json"},
        )
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert answer(response) == {
        "errors": [
            {
                "message": f"Request bodies are limited to {limit} bytes.",
                "extensions": {"code": "REQUEST_TOO_LARGE", "limit": limit},
            }
        ]
    }
    assert calls(simulator) == 0
    # The gateway is unharmed: the next query is answered.
    known = simulator.demo_ids()[0]
    assert await bounded(graphql(http, gateway, JOB_IDS, {"ids": [known]})) == {
        "data": {"jobs": [{"id": known}]}
    }


# --- queries GraphQL itself refuses ---------------------------------------------------------------


@pytest.mark.parametrize("query", ["{ job(id: ", "{ job(id: 1) { id } ", "query { jobs(ids: [}"])
async def test_a_query_that_does_not_parse(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient, query: str
) -> None:
    with pytest.raises(GraphQLSyntaxError) as caught:
        parse(query)

    body = await bounded(graphql(http, gateway, query))

    expected = {**caught.value.formatted, "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}
    assert body == {"data": None, "errors": [expected]}


@pytest.mark.parametrize(
    "query",
    [
        '{ job(id: "88c6ca184c0e432bbf5b665e2a15d0c1") { id colour } }',
        '{ jobs(id: "88c6ca184c0e432bbf5b665e2a15d0c1") { id } }',
        "{ job { id } }",
        "{ job(id: 1) }",
    ],
)
async def test_a_query_that_does_not_validate(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient, query: str
) -> None:
    problems = validate(build_graphql_schema(build_schema(gateway.settings).as_str()), parse(query))
    assert problems
    simulator.reset_stats()

    body = await bounded(graphql(http, gateway, query))

    assert body == {
        "data": None,
        "errors": [
            {**problem.formatted, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
            for problem in problems
        ],
    }
    assert calls(simulator) == 0


async def test_query_size_limits(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    known = simulator.demo_ids()[2]
    deep = f'{{ job(id: "{known}") {{ result {{ files {{ key }} }} }} }}'
    shallow = f'{{ job(id: "{known}") {{ output {{ key }} }} }}'
    aliased = f'{{ a: job(id: "{known}") {{ id }} b: job(id: "{known}") {{ id }} }}'
    many_aliases = aliased.replace("} }", f'}} c: job(id: "{known}") {{ id }} }}')
    too_many_tokens = (
        "{ " + " ".join(f'j{n}: job(id: "{known}") {{ id }}' for n in range(40)) + " }"
    )
    with pytest.raises(GraphQLSyntaxError) as over_the_limit:
        parse(too_many_tokens, max_tokens=200)
    with start_gateway(max_query_depth=2, max_aliases=2, max_tokens=200) as gateway:
        simulator.reset_stats()
        too_deep = await bounded(graphql(http, gateway, deep))
        too_many_aliases = await bounded(graphql(http, gateway, many_aliases))
        too_long = await bounded(graphql(http, gateway, too_many_tokens))
        refused_calls = calls(simulator)
        within_depth = await bounded(graphql(http, gateway, shallow))
        within_aliases = await bounded(graphql(http, gateway, aliased))

    assert too_deep == {
        "data": None,
        "errors": [
            {
                "message": "Expected operations nested at most 2 fields deep, received an "
                "anonymous operation nested 3 deep.",
                "locations": location(deep, "key"),
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ],
    }
    assert too_many_aliases == {
        "data": None,
        "errors": [
            {
                "message": "Expected at most 2 aliases in one document, received 3.",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ],
    }
    assert too_long == {
        "data": None,
        "errors": [
            {**over_the_limit.value.formatted, "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}
        ],
    }
    assert refused_calls == 0
    assert "errors" not in within_depth
    assert within_aliases["data"]["a"] == within_aliases["data"]["b"] == {"id": known}


# --- a throttled, failing or slow upstream --------------------------------------------------------


def upstream_error(
    query: str, path: list[str | int], status: int, code: str, request_id: str
) -> dict[str, Any]:
    """The GraphQL error for an upstream error answer; the message is the client's sentence."""
    error = error_for(QUERY_ACTION, status, {"Code": code, "RequestId": request_id}, {})
    return {
        "message": error.message,
        "locations": location(query, f"{path[0]}("),
        "path": path,
        "extensions": {
            "code": error.code,
            "upstreamCode": code,
            "upstreamRequestId": request_id,
            "httpStatus": status,
            # A throttle always says when to retry: the upstream's window, unless it said.
            **({"retryAfter": 1.0} if code.startswith("Throttling") else {}),
        },
    }


async def test_throttled_ids_fail_alone(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # The simulator allows fewer calls than the gateway thinks it may make, and the gateway does
    # not retry: the calls beyond the simulator's limit come back Throttling.User.
    simulator.set_faults(qps=5)
    ids = simulator.demo_ids()
    with start_gateway(upstream_qps=100, max_retries=0) as gateway:
        simulator.reset_stats()
        body = await bounded(graphql(http, gateway, JOBS, {"ids": ids}))
    stats = simulator.query_stats()

    answers = body["data"]["jobs"]
    errors_at = {error["path"][1]: error for error in body.get("errors", [])}
    expected_answers = [
        None if index in errors_at else served(simulator, answer)
        for index, answer in enumerate(answers)
    ]
    expected_errors = [
        upstream_error(JOBS, ["jobs", index], 400, "Throttling.User", request_id_of(error))
        for index, error in sorted(errors_at.items())
    ]
    assert by_path(body) == {"data": {"jobs": expected_answers}, "errors": expected_errors}
    assert [answer and answer["id"] for answer in answers] == [
        None if index in errors_at else job_id for index, job_id in enumerate(ids)
    ]
    assert stats["calls"] == len(ids)
    assert len(errors_at) == stats["throttled"] >= 1
    assert len(ids) - len(errors_at) >= 5


async def test_retries_ride_out_transient_failures(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # 30% of calls fail with 503. The simulator's fault draws are seeded (some of the first 20
    # calls always fail), but which id meets which draw depends on timing: 10 retries make an id
    # that fails every try (0.3**11, 2e-6) negligible where 3 would not be (0.3**4, 1%).
    simulator.set_faults(errorRate=0.3)
    ids = simulator.demo_ids()
    with start_gateway(max_retries=10) as gateway:
        simulator.reset_stats()
        body = await bounded(graphql(http, gateway, JOBS, {"ids": ids}))

    answers = body["data"]["jobs"]
    assert body == {"data": {"jobs": [served(simulator, answer) for answer in answers]}}
    assert [answer["id"] for answer in answers] == ids
    assert calls(simulator) > len(ids)


async def test_a_failing_upstream_fails_each_id_and_the_gateway_recovers(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = simulator.demo_ids()[:3]
    simulator.set_faults(errorRate=1.0)
    with start_gateway(max_retries=0) as gateway:
        failed = await bounded(graphql(http, gateway, JOBS, {"ids": ids}))
        simulator.set_faults(errorRate=0.0)
        recovered = await bounded(graphql(http, gateway, JOBS, {"ids": ids}))

    failed = by_path(failed)
    assert failed == {
        "data": {"jobs": [None, None, None]},
        "errors": [
            upstream_error(JOBS, ["jobs", index], 503, "ServiceUnavailable", request_id_of(error))
            for index, error in enumerate(failed["errors"])
        ],
    }
    # Failures are not cached: the next query asks again, and is served.
    answers = recovered["data"]["jobs"]
    assert recovered == {"data": {"jobs": [served(simulator, answer) for answer in answers]}}
    assert [answer["id"] for answer in answers] == ids


async def test_a_slow_upstream_times_out(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    simulator.set_faults(latencyMs=1000)
    with start_gateway(read_timeout=0.2, max_retries=0) as gateway:
        body = await bounded(graphql(http, gateway, JOB, {"id": simulator.demo_ids()[0]}))
        simulator.set_faults(latencyMs=0)

    assert body == {
        "data": {"job": None},
        "errors": [
            {
                "message": f"{QUERY_ACTION} failed before an answer arrived (ReadTimeout).",
                "locations": location(JOB, "job("),
                "path": ["job"],
                "extensions": {"code": "UPSTREAM_TIMEOUT"},
            }
        ],
    }


async def test_a_deadline_shorter_than_the_wait_for_a_budget_slot(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # One call per second: the first id takes the only slot, the others would wait about a
    # second, past the request's deadline, and are shed at once with a retry hint.
    ids = simulator.demo_ids()[:3]
    with start_gateway(upstream_qps=1) as gateway:
        simulator.reset_stats()
        body = await bounded(
            graphql(http, gateway, JOB_IDS, {"ids": ids}, headers={TIMEOUT_HEADER: "0.8"})
        )
    window = 1 + gateway.settings.upstream_window_margin

    answers = body["data"]["jobs"]
    shed = {error["path"][1]: error for error in body["errors"]}
    assert len(shed) == len(ids) - 1
    expected_errors = []
    for index, error in sorted(shed.items()):
        retry_after = error["extensions"]["retryAfter"]
        assert 0 < retry_after <= window
        # The sentence names the same delay, to the hundredth.
        stated = BUDGET_MESSAGE.fullmatch(error["message"])
        assert stated is not None, error["message"]
        assert abs(float(stated["seconds"]) - retry_after) <= 0.01
        expected_errors.append(
            {
                "message": error["message"],
                "locations": location(JOB_IDS, "jobs("),
                "path": ["jobs", index],
                "extensions": {"code": "BUDGET_EXHAUSTED", "retryAfter": retry_after},
            }
        )
    assert by_path(body) == {
        "data": {"jobs": [None if index in shed else {"id": ids[index]} for index in range(3)]},
        "errors": expected_errors,
    }
    assert sum(answer is not None for answer in answers) == calls(simulator) == 1


@pytest.fixture
def quiet_drops() -> Iterator[None]:
    """Keeps the simulator's deliberate drops out of the server error log."""
    server_log = logging.getLogger("uvicorn.error")
    log_filter = DroppedConnectionLogFilter()
    server_log.addFilter(log_filter)
    yield
    server_log.removeFilter(log_filter)


@pytest.mark.usefixtures("quiet_drops")
async def test_dropped_connections_are_unavailable_without_a_hang(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    ids = simulator.demo_ids()[:2]
    simulator.set_faults(dropRate=1.0)
    with start_gateway(max_retries=0) as gateway:
        dropped = await bounded(graphql(http, gateway, JOB_IDS, {"ids": ids}), 10)
        simulator.set_faults(dropRate=0.0)
        recovered = await bounded(graphql(http, gateway, JOB_IDS, {"ids": ids}), 10)

    assert by_path(dropped) == {
        "data": {"jobs": [None, None]},
        "errors": [
            {
                "message": f"{QUERY_ACTION} failed before an answer arrived (RemoteProtocolError).",
                "locations": location(JOB_IDS, "jobs("),
                "path": ["jobs", index],
                "extensions": {"code": "UPSTREAM_UNAVAILABLE"},
            }
            for index in range(2)
        ],
    }
    assert recovered == {"data": {"jobs": [{"id": job_id} for job_id in ids]}}


# --- a lying upstream -----------------------------------------------------------------------------


async def test_a_garbled_body_is_a_bad_response(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    simulator.set_faults(malformedRate=1.0)
    with start_gateway(max_retries=0) as gateway:
        body = await bounded(graphql(http, gateway, JOB, {"id": simulator.demo_ids()[0]}))

    (error,) = body["errors"]
    assert body == {
        "data": {"job": None},
        "errors": [
            {
                "message": (
                    f"{QUERY_ACTION} answered HTTP 200 with a body that is not a JSON object."
                ),
                "locations": location(JOB, "job("),
                "path": ["job"],
                # The RequestId comes from the response header when the body cannot be read.
                "extensions": {
                    "code": "UPSTREAM_BAD_RESPONSE",
                    "upstreamRequestId": request_id_of(error),
                    "httpStatus": 200,
                },
            }
        ],
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"FunctionName": "Cover"},
        {"FunctionName": "Cover", "State": ""},
        {"FunctionName": "Cover", "State": None},
        {},
    ],
    ids=repr,
)
async def test_an_answer_without_state_is_no_such_job(
    simulator: SimulatorServer,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    fields: dict[str, Any],
) -> None:
    job_id = unknown_id()
    simulator.put_job(job_id, {"JobId": job_id, **fields})

    body = await bounded(graphql(http, gateway, JOB, {"id": job_id}))

    assert body == {"data": {"job": None}}


QUIRK_FIELDS = "id state rawState functionName algorithm userData"


async def test_an_unknown_state_is_unknown_with_its_text_kept(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = quirk_id(simulator, "state-unknown")
    fields = upstream_fields(simulator, job_id)
    query = (
        f"query Job($id: ID!) {{ job(id: $id) {{ {QUIRK_FIELDS} isFinished result {{ code }} }} }}"
    )

    body = await bounded(graphql(http, gateway, query, {"id": job_id}))

    assert body == {
        "data": {
            "job": {
                "id": job_id,
                "state": "UNKNOWN",
                "rawState": fields["State"],
                "functionName": fields["FunctionName"],
                "algorithm": re.sub(r"(?<=[a-z])(?=[A-Z])", "_", fields["FunctionName"]).upper(),
                "userData": None if fields["UserData"] == "null" else fields["UserData"],
                "isFinished": False,
                "result": None,
            }
        }
    }
    assert fields["State"] not in ("Queuing", "Analysing", "Success", "Fail")


async def test_an_unknown_algorithm_keeps_its_name(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = quirk_id(simulator, "function-unknown")
    fields = upstream_fields(simulator, job_id)

    body = await bounded(graphql(http, gateway, JOB, {"id": job_id}))

    # Everything else of the job is served as for a known algorithm.
    job = body["data"]["job"]
    assert body == {"data": {"job": {**served(simulator, job), "algorithm": None}}}
    assert job["functionName"] == fields["FunctionName"] == "VideoSuperResolution"


def field_error(query: str, field: str, reason_of: Malformed, request_id: str) -> dict[str, Any]:
    return {
        "message": f"The upstream's {field} cannot be decoded: {reason_of.reason}",
        "locations": location(query, f" {field} "),
        "path": ["job", field],
        "extensions": {"code": "UPSTREAM_BAD_RESPONSE", "upstreamRequestId": request_id},
    }


def malformed(fields: dict[str, Any], field: str) -> Malformed:
    """The decode layer's account of what is wrong with `field` of this answer."""
    job = decode_job(fields, fetched_at=0.0)
    assert job is not None
    value = getattr(job, field)
    assert isinstance(value, Malformed)
    return value


@pytest.mark.parametrize(
    ("slug", "field"),
    [("result-not-json", "result"), ("params-not-json", "params")],
)
async def test_an_undecodable_field_fails_alone(
    simulator: SimulatorServer,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    slug: str,
    field: str,
) -> None:
    job_id = quirk_id(simulator, slug)
    fields = upstream_fields(simulator, job_id)
    query = (
        "query Job($id: ID!) { job(id: $id) { id state functionName requestId"
        " params result { code } output { bucket } } }"
    )

    body = await bounded(graphql(http, gateway, query, {"id": job_id}))

    job = body["data"]["job"]
    request_id = job["requestId"]
    assert REQUEST_ID.fullmatch(request_id)
    good_result = json.loads(fields["Result"]) if field != "result" else None
    assert body == {
        "data": {
            "job": {
                "id": job_id,
                "state": fields["State"].upper(),
                "functionName": fields["FunctionName"],
                "requestId": request_id,
                "params": None if field == "params" else json5.loads(fields["JobParams"]),
                "result": None if good_result is None else {"code": good_result["Code"]},
                "output": {"bucket": fields["Output"].removeprefix("oss://").split(".", 1)[0]},
            }
        },
        "errors": [field_error(query, field, malformed(fields, field), request_id)],
    }


@pytest.mark.parametrize(
    "params",
    [
        '{"fps": NaN}',
        '{"fps": Infinity}',
        '{"fps": 1e400}',
        "{fps: -Infinity}",
        "{fps: 0x" + "f" * 4000 + "}",
    ],
    ids=["NaN", "Infinity", "1e400", "relaxed-Infinity", "4800-digit-hex"],
)
async def test_params_json_cannot_carry_fail_alone(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient, params: str
) -> None:
    # Python's parsers accept these numbers; a JSON response cannot hold them. Passed through,
    # they would make the whole response invalid JSON (or fail it), for every job in it.
    job_id = unknown_id()
    fields = {"JobId": job_id, "State": "Queuing", "FunctionName": "Cover", "JobParams": params}
    simulator.put_job(job_id, fields)
    known = simulator.demo_ids()[0]
    query = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id state params } }"

    response = await bounded(
        http.post(gateway.graphql_url, json={"query": query, "variables": {"ids": [job_id, known]}})
    )

    assert response.status_code == 200

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in the response")

    body = without_request_ids(
        json.loads(response.text, parse_constant=strict), response.headers["x-request-id"]
    )
    known_params = json5.loads(upstream_fields(simulator, known)["JobParams"])
    (error,) = body["errors"]
    assert body == {
        "data": {
            "jobs": [
                {"id": job_id, "state": "QUEUING", "params": None},
                {"id": known, "state": "SUCCESS", "params": known_params},
            ]
        },
        "errors": [
            {
                "message": f"The upstream's params cannot be decoded: "
                f"{malformed(fields, 'params').reason}",
                "locations": location(query, " params "),
                "path": ["jobs", 0, "params"],
                "extensions": {
                    "code": "UPSTREAM_BAD_RESPONSE",
                    "upstreamRequestId": request_id_of(error),
                },
            }
        ],
    }


async def test_result_data_json_cannot_carry_is_kept_as_text(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = unknown_id()
    data = '{"score": NaN}'
    result = json.dumps({"Code": "Success", "Message": "Successful.", "Data": data})
    simulator.put_job(job_id, {"JobId": job_id, "State": "Success", "Result": result})
    query = "query Job($id: ID!) { job(id: $id) { result { code data files { key } } } }"

    response = await bounded(
        http.post(gateway.graphql_url, json={"query": query, "variables": {"id": job_id}})
    )

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in the response")

    assert json.loads(response.text, parse_constant=strict) == {
        "data": {"job": {"result": {"code": "Success", "data": data, "files": []}}}
    }


async def test_an_output_that_is_no_oss_url_fails_alone(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = unknown_id()
    fields = {
        "JobId": job_id,
        "FunctionName": "Cover",
        "State": "Success",
        "Output": "https://cdn.example.com/covers/{source}.jpg",
        "Result": json.dumps(
            {
                "Code": "Success",
                "Message": "Successful.",
                "Data": json.dumps({"result": [{"file": "covers/a.jpg"}]}),
            }
        ),
        "UserData": "null",
    }
    simulator.put_job(job_id, fields)
    query = (
        "query Job($id: ID!) { job(id: $id) { id outputTemplate userData requestId"
        " output { bucket } result { code files { key name bucket url ossUrl } } } }"
    )

    body = await bounded(graphql(http, gateway, query, {"id": job_id}))

    request_id = body["data"]["job"]["requestId"]
    assert REQUEST_ID.fullmatch(request_id)
    assert body == {
        "data": {
            "job": {
                "id": job_id,
                "outputTemplate": fields["Output"],
                "userData": None,
                "requestId": request_id,
                "output": None,
                "result": {
                    "code": "Success",
                    "files": [
                        {
                            "key": "covers/a.jpg",
                            "name": "a.jpg",
                            "bucket": None,
                            "url": None,
                            "ossUrl": None,
                        }
                    ],
                },
            }
        },
        "errors": [field_error(query, "output", malformed(fields, "output"), request_id)],
    }


async def test_the_https_output_quirk_is_read_as_its_oss_object(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # An https URL of an OSS bucket host names the same object as the oss:// form.
    job_id = quirk_id(simulator, "output-not-oss")
    fields = upstream_fields(simulator, job_id)
    host, key = fields["Output"].removeprefix("https://").split("/", 1)
    query = "query Job($id: ID!) { job(id: $id) { output { bucket key ossUrl } } }"

    body = await bounded(graphql(http, gateway, query, {"id": job_id}))

    assert body == {
        "data": {
            "job": {
                "output": {
                    "bucket": host.split(".", 1)[0],
                    "key": key,
                    "ossUrl": f"oss://{host}/{key}",
                }
            }
        }
    }


# --- wrong credentials ----------------------------------------------------------------------------


async def test_wrong_credentials_leak_nothing(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "wrong-secret-" + uuid.uuid4().hex
    token = "secret-token-" + uuid.uuid4().hex
    with (
        caplog.at_level(logging.DEBUG),
        start_gateway(access_key_secret=secret, security_token=token) as gateway,
    ):
        response = await bounded(
            http.post(
                gateway.graphql_url,
                json={"query": JOB, "variables": {"id": simulator.demo_ids()[0]}},
            )
        )

    body = answer(response)
    (error,) = body["errors"]
    assert body == {
        "data": {"job": None},
        "errors": [
            upstream_error(JOB, ["job"], 400, "SignatureDoesNotMatch", request_id_of(error))
        ],
    }
    assert error["extensions"]["code"] == "UPSTREAM_AUTH_FAILED"
    # The simulator's message quotes its StringToSign (AccessKeyId, SecurityToken): none of it
    # reaches the client, and neither the secret nor the token reaches the log (httpx's request
    # lines included).
    for leak in (secret, token, "string to sign", SIMULATOR_DEMO_ACCESS_KEY_ID):
        assert leak not in response.text
    for leak in (secret, token, "string to sign"):
        assert leak not in caplog.text


# --- unexpected errors ----------------------------------------------------------------------------
#
# No input reaches a non-GatewayError inside the gateway's own resolvers (the client maps every
# failure below it, decode never raises, the fetcher hands bugs on as values), so the masking
# extension is proven on a schema built here whose resolvers fail as a bug would, in the two shapes
# the gateway's resolvers have: a field that raises, and a list entry that is an exception
# (Query.jobs). The HTTP view is Strawberry's own, as in the gateway.


@strawberry.type
class Item:
    value: str


@strawberry.type
class BuggyQuery:
    @strawberry.field
    def broken(self) -> str | None:
        raise RuntimeError("secret detail")

    @strawberry.field
    def missing(self) -> str | None:
        raise errors.InvalidJobId("0123", "a test reason")

    @strawberry.field
    def items(self) -> list[Item | None]:
        return cast(list[Item | None], [Item(value="ok"), RuntimeError("secret detail")])


async def test_an_unexpected_error_is_masked_and_logged_with_a_correlation_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    schema = strawberry.Schema(
        query=BuggyQuery,
        extensions=[lambda: OperationPolicy(max_tokens=1000, validation_rules=specified_rules)],
    )
    query = "{ broken missing items { value } }"
    with (
        caplog.at_level(logging.ERROR, logger="gateway.api.extensions"),
        run_asgi_server(GraphQL(schema)) as url,
    ):
        response = await bounded(http.post(f"{url}/graphql", json={"query": query}))

    assert response.status_code == 200
    assert "secret detail" not in response.text
    body = by_path(response.json())
    # Random, so read from the answer; checked below against the log.
    correlation_ids = [error["extensions"].get("correlationId") for error in body["errors"]]
    assert body == {
        "data": {"broken": None, "missing": None, "items": [{"value": "ok"}, None]},
        "errors": [
            {
                "message": "Unexpected error.",
                "locations": location(query, "broken"),
                "path": ["broken"],
                "extensions": {"code": "INTERNAL_ERROR", "correlationId": correlation_ids[0]},
            },
            {
                "message": "Unexpected error.",
                "locations": location(query, "items"),
                "path": ["items", 1],
                "extensions": {"code": "INTERNAL_ERROR", "correlationId": correlation_ids[1]},
            },
            {
                "message": errors.InvalidJobId("0123", "a test reason").message,
                "locations": location(query, "missing"),
                "path": ["missing"],
                "extensions": {"code": "INVALID_JOB_ID", "jobId": "0123"},
            },
        ],
    }
    # Each masked error is logged once, with its correlation id and the real exception.
    logged = [
        record
        for record in caplog.records
        if record.name == "gateway.api.extensions" and record.levelno == logging.ERROR
    ]
    assert len(logged) == 2
    for correlation_id, path in zip(correlation_ids[:2], ["broken", "items.1"], strict=True):
        assert re.fullmatch(r"[0-9a-f]{32}", correlation_id)
        (record,) = [record for record in logged if correlation_id in record.getMessage()]
        assert path in record.getMessage()
        assert record.exc_info is not None
        assert str(record.exc_info[1]) == "secret detail"
    assert len(set(correlation_ids[:2])) == 2
