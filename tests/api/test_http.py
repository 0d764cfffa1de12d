"""The HTTP face around /graphql: CORS for browsers, health and readiness."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.api.conftest import GatewayServer, StartGateway, answer

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


# --- CORS, as browsers exercise it --------------------------------------------------------------
#
# A browser preflights a cross-origin POST of JSON: OPTIONS with the page's Origin, the method,
# and the non-safelisted headers it is about to send, lower case, sorted and comma-separated (as
# Chromium and Firefox write them). Then it sends the request itself, and lets the page's script
# read only the response headers the answer exposes.

ORIGIN = "https://app.example"

#: The headers each client library adds to a POST of JSON (content-type is not safelisted for
#: application/json, so it is always in the preflight).
CLIENT_HEADERS = {
    "urql": {"content-type": "application/json"},
    "apollo-client": {
        "content-type": "application/json",
        "apollographql-client-name": "web",
        "apollographql-client-version": "1.2.3",
        "apollo-require-preflight": "true",
    },
    "opentelemetry": {
        "content-type": "application/json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque",
        "baggage": "userId=alice",
    },
    "sentry": {
        "content-type": "application/json",
        "sentry-trace": "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        "baggage": "sentry-environment=production,sentry-release=1.0",
    },
    "gateway": {
        "content-type": "application/json",
        "authorization": "Bearer x",
        "x-request-timeout": "5",
        "x-request-id": "page-42",
    },
}


async def preflight(
    http: httpx.AsyncClient,
    gateway: GatewayServer,
    headers: list[str],
    origin: str = ORIGIN,
    method: str = "POST",
) -> httpx.Response:
    return await http.options(
        gateway.graphql_url,
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": ",".join(sorted(headers)),
        },
    )


def listed(response: httpx.Response, header: str) -> set[str]:
    return {name.strip().lower() for name in response.headers.get(header, "").split(",")}


@pytest.mark.parametrize("client", sorted(CLIENT_HEADERS))
async def test_what_common_browser_clients_send_passes_the_preflight(
    gateway: GatewayServer, http: httpx.AsyncClient, client: str
) -> None:
    # Apollo Client's and Sentry's headers used to be refused: 400 "Disallowed CORS headers".
    headers = CLIENT_HEADERS[client]
    allowed = await preflight(http, gateway, list(headers))
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "*"
    assert set(headers) <= listed(allowed, "access-control-allow-headers")
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert allowed.headers["access-control-max-age"] == "7200"

    # The request itself, and what its script may read.
    response = await http.post(
        gateway.graphql_url, json=QUERY, headers={"origin": ORIGIN, **headers}
    )
    assert response.json() == {"data": {"__typename": "Query"}}
    assert response.headers["access-control-allow-origin"] == "*"
    assert {"x-request-id", "etag", "retry-after"} <= listed(
        response, "access-control-expose-headers"
    )


async def test_a_refused_preflight_is_a_coded_error_naming_what_was_refused(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response = await preflight(http, gateway, ["content-type", "x-secret-sauce", "x-other"])
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert answer(response) == {
        "errors": [
            {
                "message": "Expected a CORS preflight the gateway allows, received one with "
                "headers not allowed: x-other, x-secret-sauce (see GATEWAY_CORS_ORIGINS and "
                "GATEWAY_CORS_HEADERS).",
                "extensions": {"code": "CORS_PREFLIGHT_REFUSED"},
            }
        ]
    }
    refused_method = await preflight(http, gateway, ["content-type"], method="DELETE")
    assert refused_method.status_code == 400
    assert "method 'DELETE' not allowed" in refused_method.json()["errors"][0]["message"]


async def test_cors_is_configurable(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    with start_gateway(
        cors_origins=f"{ORIGIN}, https://admin.example",
        cors_headers="X-Tenant, x-feature-flags",
        cors_expose_headers="x-cost",
        cors_max_age=60,
    ) as gateway:
        added = await preflight(http, gateway, ["content-type", "x-tenant", "sentry-trace"])
        elsewhere = await preflight(http, gateway, ["content-type"], origin="https://evil.example")
        response = await http.post(gateway.graphql_url, json=QUERY, headers={"origin": ORIGIN})

    assert added.status_code == 200, added.text
    assert added.headers["access-control-allow-origin"] == ORIGIN
    assert {"x-tenant", "x-feature-flags", "sentry-trace"} <= listed(
        added, "access-control-allow-headers"
    )
    assert added.headers["access-control-max-age"] == "60"
    assert elsewhere.status_code == 400
    assert answer(elsewhere)["errors"][0]["message"] == (
        "Expected a CORS preflight the gateway allows, received one with origin "
        "'https://evil.example' not allowed (see GATEWAY_CORS_ORIGINS and GATEWAY_CORS_HEADERS)."
    )
    assert "access-control-allow-origin" not in elsewhere.headers
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert listed(response, "access-control-expose-headers") == {
        "x-request-id",
        "etag",
        "retry-after",
        "www-authenticate",
        "x-cost",
    }


async def test_cors_headers_star_allows_any_header(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway(cors_headers="*") as gateway:
        response = await preflight(http, gateway, ["content-type", "x-anything-at-all"])
    assert response.status_code == 200
    assert listed(response, "access-control-allow-headers") >= {"x-anything-at-all"}


async def test_empty_cors_origins_turn_cors_off(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    with start_gateway(cors_origins="") as gateway:
        response = await http.post(gateway.graphql_url, json=QUERY, headers={"origin": ORIGIN})
    assert response.json() == {"data": {"__typename": "Query"}}
    assert "access-control-allow-origin" not in response.headers


async def handshake_from(gateway: GatewayServer, origin: str) -> int:
    """The HTTP status a browser page of `origin` meets opening the WebSocket (101: open)."""
    url = gateway.graphql_url.replace("http://", "ws://")
    try:
        async with connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"origin": origin},
        ) as socket:
            await socket.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_pages_of_the_cors_origins_may_open_the_websocket(
    start_gateway: StartGateway,
) -> None:
    # Strawberry refused every cross-origin handshake (403): a page on another origin could
    # query the gateway but not subscribe.
    with start_gateway() as gateway:
        assert await handshake_from(gateway, ORIGIN) == 101
    with start_gateway(cors_origins=ORIGIN) as gateway:
        assert await handshake_from(gateway, ORIGIN) == 101
        assert await handshake_from(gateway, "https://evil.example") == 403
