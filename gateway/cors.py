"""CORS: which browser pages may call the gateway, with which headers, and what they may read.

The headers allowed by default are those the common browser clients send: `content-type` and
`accept` (every client), `authorization` and `x-api-key`, the gateway's own `x-request-timeout`,
`x-request-id` and `idempotency-key`, Apollo Client's client awareness and CSRF headers, the W3C
trace context and baggage (OpenTelemetry's browser SDK, Sentry), Sentry's `sentry-trace`, B3
(OpenTelemetry's Zipkin propagator) and graphql-sse's token. `GATEWAY_CORS_HEADERS` adds to them
(`*`: any). Scripts may read `x-request-id`, `etag`, `retry-after` and `www-authenticate` (plus
`GATEWAY_CORS_EXPOSE_HEADERS`); browsers cache a preflight's answer for `GATEWAY_CORS_MAX_AGE`
seconds. A refused preflight is answered 400 with a coded GraphQL error naming what was refused,
like every other refusal. The same origins may open the WebSocket (`browser_origins`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.http_errors import CORS_PREFLIGHT_REFUSED, ErrorResponse
from gateway.observe.requests import REQUEST_ID_HEADER
from gateway.settings import GatewaySettings

#: Request headers browsers may send whatever the settings say.
DEFAULT_ALLOWED_HEADERS: Final = (
    "accept",
    "content-type",
    "authorization",
    "x-api-key",
    "x-request-timeout",
    REQUEST_ID_HEADER,
    # submitJob's idempotency key.
    "idempotency-key",
    # Apollo Client: client awareness, and the header its CSRF prevention asks for.
    "apollographql-client-name",
    "apollographql-client-version",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    # W3C trace context and baggage (OpenTelemetry's browser SDK, Sentry), Sentry's own,
    # and B3 (OpenTelemetry's Zipkin propagator).
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "b3",
    # graphql-sse's single connection mode.
    "x-graphql-event-stream-token",
)
#: Response headers browser scripts may read whatever the settings say.
DEFAULT_EXPOSED_HEADERS: Final = (REQUEST_ID_HEADER, "etag", "retry-after", "www-authenticate")
#: What browsers may call /graphql with (OPTIONS is the preflight itself).
ALLOWED_METHODS: Final = ("GET", "POST", "OPTIONS")


def _names(listed: str) -> list[str]:
    return [name.strip().lower() for name in listed.split(",") if name.strip()]


def _merged(defaults: Iterable[str], added: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*defaults, *added]))


def browser_origins(settings: GatewaySettings) -> list[str]:
    """The origins whose pages may call the gateway (`*`: any): by HTTP under CORS, and by
    WebSocket (a browser sends `Origin` on the handshake; the view refuses the others)."""
    return [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]


def cors_middleware(settings: GatewaySettings) -> Middleware | None:
    """The CORS middleware `settings` ask for; None when GATEWAY_CORS_ORIGINS is empty."""
    origins = browser_origins(settings)
    if not origins:
        return None
    return Middleware(
        BrowserCORS,
        allow_origins=origins,
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=_merged(DEFAULT_ALLOWED_HEADERS, _names(settings.cors_headers)),
        expose_headers=_merged(DEFAULT_EXPOSED_HEADERS, _names(settings.cors_expose_headers)),
        max_age=settings.cors_max_age,
    )


class BrowserCORS(CORSMiddleware):
    """Starlette's CORS middleware, for the requests CORS is about: those with an `Origin`.

    Browsers send `Origin` on every cross-origin request (and on every POST); a request without
    it comes from a server, a script or curl, which CORS headers do not concern. Skipping the
    middleware for them changes no answer a browser sees, and spares the hot path a header
    parse and a wrapped `send` per request.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(key == b"origin" for key, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        refused = self._refused(request_headers)
        return ErrorResponse(
            400,
            f"Expected a CORS preflight the gateway allows, received one with {refused} (see "
            "GATEWAY_CORS_ORIGINS and GATEWAY_CORS_HEADERS).",
            CORS_PREFLIGHT_REFUSED,
            headers=headers,
        )

    def _refused(self, request_headers: Headers) -> str:
        """What a refused preflight asked for that is not allowed, as words."""
        refused = []
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            refused.append(f"origin {origin[:100]!r} not allowed")
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            refused.append(
                f"method {method[:20]!r} not allowed (only {', '.join(ALLOWED_METHODS)})"
            )
        asked = _names(request_headers.get("access-control-request-headers") or "")
        if not self.allow_all_headers:
            unknown = [name for name in asked if name not in self.allow_headers]
            if unknown:
                shown = ", ".join(name[:60] for name in unknown[:10])
                refused.append(f"headers not allowed: {shown}")
        if request_headers.get("access-control-request-private-network") is not None:
            refused.append("private network access, which the gateway does not grant")
        return "; ".join(refused) or "nothing the gateway allows"
