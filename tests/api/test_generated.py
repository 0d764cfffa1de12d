"""Documents generated from our schema (hypothesis-graphql), valid and invalid, against a real
gateway: never a 5xx, every error coded, nothing logged as unexpected, and the gateway still
answers afterwards."""

from __future__ import annotations

import logging

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema

from gateway.api.schema import build_schema
from tests.api.conftest import StartGateway


def test_generated_documents_are_answered_with_coded_errors(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # Ids are drawn at random: a short deadline keeps unknown ids from waiting long upstream.
    with (
        start_gateway(request_deadline=2.0) as gateway,
        httpx.Client(timeout=30, trust_env=False) as client,
        caplog.at_level(logging.WARNING),
    ):
        sdl = build_schema(gateway.settings).as_str()
        documents = st.one_of(from_schema(sdl), from_schema(sdl, mode=Mode.NEGATIVE))

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(query=documents)
        def answered(query: object) -> None:
            response = client.post(gateway.graphql_url, json={"query": query})
            assert response.status_code < 500, response.text
            body = response.json()
            for error in body.get("errors", []):
                assert "code" in error.get("extensions", {}), error

        answered()
        still = client.post(gateway.graphql_url, json={"query": "{ __typename }"})

    assert still.json() == {"data": {"__typename": "Query"}}
    unexpected = [r for r in caplog.records if r.name.startswith("gateway") and r.levelno >= 40]
    assert unexpected == []
