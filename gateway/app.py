"""`create_app(settings)`: the gateway as a Starlette app.

The lifespan builds the parts every request shares (one upstream HTTP client, one budget, one
cache, one fetcher) and closes them; each GraphQL request gets its own loader (see
`GatewayGraphQL.get_context`). Nothing is built at import time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gateway.api.context import Context
from gateway.api.schema import build_schema
from gateway.jobs.budget import Budget, LocalBudget
from gateway.jobs.cache import LocalSnapshotCache, SnapshotCache
from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.loader import JobLoader
from gateway.jobs.retry import RetryPolicy
from gateway.middleware import BodySizeLimit
from gateway.mps.client import MpsClient
from gateway.settings import GatewaySettings
from gateway.upstream import open_upstream_http

logger = logging.getLogger(__name__)

#: Header a client may send to give its request less time than the gateway's default deadline.
TIMEOUT_HEADER = "x-request-timeout"


@dataclass(slots=True)
class Services:
    """The parts all requests of one process share, alive from start-up to shutdown."""

    http: httpx.AsyncClient
    client: MpsClient
    budget: Budget
    cache: SnapshotCache
    fetcher: JobFetcher

    @classmethod
    def build(cls, settings: GatewaySettings) -> Services:
        http = open_upstream_http(settings)
        client = MpsClient(http, region=settings.region_id)
        budget = LocalBudget.from_settings(settings)
        cache = LocalSnapshotCache.from_settings(settings)
        fetcher = JobFetcher(
            client,
            budget,
            cache,
            concurrency=settings.upstream_concurrency,
            retry=RetryPolicy.from_settings(settings),
        )
        return cls(http=http, client=client, budget=budget, cache=cache, fetcher=fetcher)

    async def aclose(self) -> None:
        await self.http.aclose()


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app, giving each operation a fresh `Context`."""

    def __init__(self, settings: GatewaySettings, state: _AppState) -> None:
        super().__init__(
            build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None
        )
        self._settings = settings
        self._state = state

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        services = self._state.services
        timeout = self._settings.request_deadline
        asked = request.headers.get(TIMEOUT_HEADER)
        if asked:
            # An unreadable header is ignored rather than failing the query.
            with contextlib.suppress(ValueError):
                timeout = min(timeout, max(0.0, float(asked)))
        deadline = time.monotonic() + timeout
        return Context(
            jobs=JobLoader(services.fetcher, deadline),
            deadline=deadline,
            max_ids=self._settings.max_ids,
            fetcher=services.fetcher,
            poll_deadline=self._settings.request_deadline,
        )


class _AppState:
    """Holds the services between lifespan start and end."""

    def __init__(self) -> None:
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("The gateway is not started: run it with its lifespan.")
        return self._services

    @services.setter
    def services(self, value: Services | None) -> None:
        self._services = value

    @property
    def started(self) -> bool:
        return self._services is not None


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    """The gateway app. Reads the environment only when `settings` is not given."""
    settings = settings or GatewaySettings()
    state = _AppState()
    graphql = GatewayGraphQL(settings, state)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.services = Services.build(settings)
        logger.info(
            "Gateway started: upstream %s (%s), budget %d calls/s",
            settings.upstream_kind.value,
            settings.upstream_url,
            settings.upstream_qps,
        )
        try:
            yield
        finally:
            services, state.services = state.services, None
            await services.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        services = state.services
        return JSONResponse(
            {
                "status": "ready",
                "upstream": settings.upstream_kind.value,
                "budget": asdict(services.budget.snapshot()),
                "fetcher": asdict(services.fetcher.stats()),
            }
        )

    middleware = [Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)]
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["content-type", "authorization", TIMEOUT_HEADER],
                max_age=600,
            ),
        )
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
