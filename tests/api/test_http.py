"""The HTTP face around /graphql: CORS for browsers, health and readiness."""

from __future__ import annotations

import httpx

from tests.api.conftest import GatewayServer

QUERY = {"query": "{ __typename }"}


async def test_a_browser_preflight_is_answered(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.options(
        gateway.graphql_url,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-request-timeout",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed
    assert "x-request-timeout" in allowed


async def test_a_cross_origin_post_carries_the_cors_header(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        gateway.graphql_url, json=QUERY, headers={"origin": "https://app.example"}
    )
    assert response.json() == {"data": {"__typename": "Query"}}
    assert response.headers["access-control-allow-origin"] == "*"


async def test_a_request_without_origin_gets_no_cors_header(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await http.post(gateway.graphql_url, json=QUERY)
    assert response.json() == {"data": {"__typename": "Query"}}
    assert "access-control-allow-origin" not in response.headers


async def test_health(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{gateway.url}/healthz")
    assert response.json() == {"status": "ok"}
