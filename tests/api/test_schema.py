"""The schema's caches work across requests, the limits' validation rules included."""

from __future__ import annotations

from typing import Any

import graphql
import pytest
import strawberry.schema.schema

from gateway.api.schema import build_schema
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
