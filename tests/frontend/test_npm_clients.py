"""The pinned npm packages install and reach a running gateway."""

from __future__ import annotations

from tests.api.conftest import StartGateway
from tests.support.node import run_node


def test_graphql_http_client_reaches_the_gateway(start_gateway: StartGateway) -> None:
    with start_gateway() as gateway:
        answer = run_node("smoke.mjs", [gateway.graphql_url])
    assert answer == {"data": {"__typename": "Query"}}
