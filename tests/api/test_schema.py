"""The schema's caches work across requests, the limits' validation rules included."""

from __future__ import annotations

import time
from typing import Any, cast

import graphql
import pytest
import strawberry.schema.schema

from gateway.api.context import Context
from gateway.api.schema import build_schema
from gateway.api.views import JobViews
from gateway.jobs.fetcher import JobFetcher
from gateway.settings import GatewaySettings


async def test_a_repeated_query_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # graphql-core's `validate` as Strawberry calls it: the validation cache calls it on a miss.
    validate = graphql.validate
    calls: list[str] = []

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        calls.append("validate")
        return validate(*args, **kwargs)

    monkeypatch.setattr(strawberry.schema.schema, "validate", counting_validate)
    schema = build_schema(GatewaySettings())

    for _ in range(3):
        result = await schema.execute("query CacheProbe { __typename }")
        assert result.errors is None

    # Limiters made per request would add new rule classes each time, and the cache (keyed by
    # the rules too) would miss on every request.
    assert calls == ["validate"]


async def test_an_operation_whose_deadline_passed_before_it_executes_is_refused_unrun() -> None:
    schema = build_schema(GatewaySettings())

    def context(deadline: float) -> Context:
        # `{ __typename }` reads no job: the fetcher is never asked.
        return Context(
            fetcher=cast(JobFetcher, object()),
            deadline=deadline,
            max_ids=1,
            views=JobViews(),
            timeout=2.0,
            max_page_size=1,
        )

    late = await schema.execute("{ __typename }", context_value=context(time.monotonic() - 0.001))
    in_time = await schema.execute("{ __typename }", context_value=context(time.monotonic() + 60))

    assert late.data is None
    assert [(error.message, error.extensions) for error in late.errors or ()] == [
        (
            "The request's deadline of 2 s passed while the request waited to run; retry in "
            "1.00 s.",
            {"code": "DEADLINE_EXCEEDED", "retryAfter": 1.0},
        )
    ]
    assert (in_time.data, in_time.errors) == ({"__typename": "Query"}, None)
