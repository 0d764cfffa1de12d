"""`create_app(settings)`: the gateway as a Starlette app.

The lifespan builds the parts every request shares (one upstream HTTP client, one budget, one
cache, one fetcher) and closes them; each GraphQL request gets its own loader (see
`GatewayGraphQL.get_context`). Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gateway.api.context import Context
from gateway.api.schema import build_schema
from gateway.api.views import JobViews
from gateway.middleware import BodySizeLimit, BrowserCORS
from gateway.services import Services
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

#: Header a client may send to give its request less time than the gateway's default deadline.
TIMEOUT_HEADER = "x-request-timeout"


def _camel_keys(value: object) -> object:
    """`value` with every dict key in camelCase (`in_flight` -> `inFlight`), as the rest of
    what the gateway answers (GraphQL fields, error extensions) is spelled."""
    if isinstance(value, dict):
        return {_camel(str(key)): _camel_keys(item) for key, item in value.items()}
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app, giving each operation a fresh `Context`."""

    def __init__(self, settings: GatewaySettings, state: _AppState) -> None:
        super().__init__(
            build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None
        )
        self._settings = settings
        self._state = state
        self._views = JobViews()

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
        return Context(
            deadline=time.monotonic() + timeout,
            timeout=timeout,
            max_ids=self._settings.max_ids,
            fetcher=services.fetcher,
            presigner=services.presigner,
            views=self._views,
            per_connection=isinstance(request, WebSocket),
        )


def _on_sigterm(action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` on the event loop when the process gets SIGTERM, before the server's own
    handler (which stops accepting and waits for requests under way); returns what undoes it.

    The server waits for every request before it shuts the app down, so requests waiting for a
    budget slot would otherwise run to their deadline: `action` answers them at once. Only the
    main thread can take signals (a server run in a thread, as tests do, gets nothing).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(action)
        if callable(previous):
            previous(signum, frame)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    signal.signal(signal.SIGTERM, handle)
    return restore


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
        state.services = services = Services.build(settings)
        restore = _on_sigterm(services.begin_shutdown)
        logger.info(
            "Gateway started: upstream %s (%s), budget %d calls/s",
            settings.upstream_kind.value,
            settings.upstream_url,
            settings.upstream_qps,
        )
        if settings.redis_url is not None:
            # The location only: the URL may hold a password.
            logger.info(
                "Budget and snapshot cache shared through Redis at %s (keys %s:*); "
                "%d calls/s for this process while Redis is unreachable",
                settings.redis_location,
                settings.redis_prefix,
                settings.fallback_qps,
            )
        try:
            yield
        finally:
            restore()
            state.services = None
            await services.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        services = state.services
        configured = services.redis is not None
        reachable = await services.probe_redis()
        # Degraded still serves (HTTP 200): each process on its own budget share and cache.
        degraded = configured and (not reachable or services.degraded)
        report = services.report()
        redis_report = report.pop("redis")
        assert isinstance(redis_report, dict)
        return JSONResponse(
            _camel_keys(
                {
                    "status": "degraded" if degraded else "ready",
                    "upstream": settings.upstream_kind.value,
                    "redis": {**redis_report, "reachable": reachable},
                    **report,
                }
            )
        )

    middleware = [Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)]
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if origins:
        middleware.insert(
            0,
            Middleware(
                BrowserCORS,
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
