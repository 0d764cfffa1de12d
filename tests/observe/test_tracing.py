"""Traces: the span tree of one `jobs(ids:)` query through a real gateway sharing a real Redis,
collected with the SDK's in-memory exporter; and when the OTEL_* variables turn tracing on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.budget import QUERY_JOB
from gateway.observe.otel import Tracing
from gateway.observe.tracing import exporter_names
from gateway.server import server_options
from tests.api.conftest import gateway_settings
from tests.jobs.redisutil import REDIS_URL, unique_prefix
from tests.servers import SimulatorServer, run_asgi_server

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
BROWSER_SPAN_ID = "b7ad6b7169203331"
QUERY = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id requestId } }"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def test_one_query_makes_one_tree_under_the_browsers_span(
    simulator: SimulatorServer, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prefix = unique_prefix()
    settings = gateway_settings(simulator, redis_url=REDIS_URL, redis_prefix=prefix)
    ids = simulator.demo_ids()[:2]
    app = create_app(settings, tracing=Tracing(provider))
    with run_asgi_server(app, lifespan="on", **server_options(settings)) as url:
        response = httpx.post(
            f"{url}/graphql",
            json={"query": QUERY, "variables": {"ids": ids}},
            headers={"traceparent": f"00-{TRACE_ID}-{BROWSER_SPAN_ID}-01"},
        )
    jobs = response.json()["data"]["jobs"]
    spans = exporter.get_finished_spans()

    named = {span.context.span_id: span.name for span in spans}

    def parent(span: ReadableSpan) -> str | None:
        if span.parent is None:
            return None
        return named.get(span.parent.span_id, f"remote {span.parent.span_id:016x}")

    assert {f"{span.context.trace_id:032x}" for span in spans} == {TRACE_ID}
    redis = [span for span in spans if _attributes(span).get("db.system") == "redis"]
    tree = Counter((span.name, parent(span)) for span in spans if span not in redis)
    assert tree == {
        ("POST /graphql", f"remote {BROWSER_SPAN_ID}"): 1,
        ("GraphQL Query: Jobs", "POST /graphql"): 1,
        ("GraphQL Parsing", "GraphQL Query: Jobs"): 1,
        ("GraphQL Validation", "GraphQL Query: Jobs"): 1,
        ("GraphQL Resolving: jobs", "GraphQL Query: Jobs"): 1,
        ("jobs batch", "GraphQL Resolving: jobs"): 1,
        ("budget wait", "jobs batch"): 2,
        (f"MPS {QUERY_JOB}", "jobs batch"): 2,
    }
    (batch,) = [span for span in spans if span.name == "jobs batch"]
    assert _attributes(batch) == {"gateway.ids": 2}
    waits = [_attributes(span) for span in spans if span.name == "budget wait"]
    assert waits == [{"gateway.budget.action": QUERY_JOB, "gateway.budget.outcome": "granted"}] * 2
    calls = [_attributes(span) for span in spans if span.name == f"MPS {QUERY_JOB}"]
    assert sorted(calls, key=lambda call: call["mps.request_id"]) == sorted(
        (
            {
                "rpc.system": "aliyun_rpc",
                "rpc.service": "mts",
                "rpc.method": QUERY_JOB,
                "gateway.upstream.outcome": "ok",
                "mps.request_id": job["requestId"],
            }
            for job in jobs
        ),
        key=lambda call: call["mps.request_id"],
    )
    # Each Redis round trip of the request (the cache's MGET, the claims, the stores) is
    # under the batch, but the kept answers' lookup (a GET, before any GraphQL runs), under the
    # request; the budget's own round trips serve every request and make no span.
    by_parent = Counter((parent(span), span.name) for span in redis)
    assert by_parent[("POST /graphql", "GET")] == 1
    assert {parent(span) for span in redis} == {"jobs batch", "POST /graphql"}
    assert sum(count for (where, _), count in by_parent.items() if where == "POST /graphql") == 1
    assert {"MGET", "SET"} <= {span.name for span in redis}
    statements = " ".join(str(_attributes(span)["db.statement"]) for span in redis)
    for secret_or_id in (prefix, *ids, "redis://"):
        assert secret_or_id not in statements
    assert "acquire" not in statements  # sanitized: "EVALSHA ? ? ..."


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp_proto_http"]),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            ["otlp_proto_grpc"],
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp_proto_http", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_only_the_otel_variables_turn_tracing_on(environ: dict[str, str], names: list[str]) -> None:
    assert exporter_names(environ) == names
