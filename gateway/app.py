"""`create_app(settings)`: the gateway as a Starlette app.

The lifespan builds the parts every request shares (one upstream HTTP client, one budget, one
cache, one fetcher) and closes them; each GraphQL request gets its own loader (see
`GatewayGraphQL.get_context`). Nothing is built at import time.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import httpx
import redis.asyncio
import redis.exceptions
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from gateway.api import client_json
from gateway.api.context import Context
from gateway.api.schema import build_schema
from gateway.api.views import JobViews
from gateway.api.websocket import GatewayWebSocketAdapter, TransportWSHandler, close_quietly
from gateway.credentials import account_credentials
from gateway.http_errors import BAD_REQUEST, CODE_OF_STATUS, ErrorResponse
from gateway.jobs.backend import open_redis
from gateway.jobs.budget import Budget, LocalBudget
from gateway.jobs.cache import LocalSnapshotCache, SnapshotCache
from gateway.jobs.claims import RedisFetchClaims
from gateway.jobs.failover import FailoverBudget, FailoverCache, FailoverClaims
from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.redis_budget import RedisBudget
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.jobs.retry import RetryPolicy
from gateway.middleware import BodyReadTimeout, BodySizeLimit, BrowserCORS
from gateway.mps.client import MpsClient
from gateway.oss import OssPresigner
from gateway.settings import GatewaySettings
from gateway.upstream import open_upstream_http

logger = logging.getLogger(__name__)

#: Header a client may send to give its request less time than the gateway's default deadline.
TIMEOUT_HEADER = "x-request-timeout"


@dataclass(slots=True)
class Services:
    """The parts all requests of one process share, alive from start-up to shutdown.

    Without `redis_url` the budget and the cache live in this process. With it, they are shared
    by every process using that Redis and prefix, each wrapped in a failover to a local one
    (`gateway.jobs.failover`): when Redis does not answer, this process serves on its share of
    the account's limit (`upstream_qps // expected_replicas`) and its own cache until Redis
    answers again. With Redis, the fetcher also claims each id it fetches
    (`gateway.jobs.claims`), so that the fleet makes one call per id at a time; while Redis
    does not answer, it fetches without claims.
    """

    http: httpx.AsyncClient
    client: MpsClient
    budget: Budget
    cache: SnapshotCache
    fetcher: JobFetcher
    #: Signs OSS download URLs with the key the upstream calls use (no I/O).
    presigner: OssPresigner
    #: The Redis client behind the shared budget and cache; None when there is none.
    redis: redis.asyncio.Redis | None = None
    #: The fleet-wide fetch claims (with Redis only).
    claims: FailoverClaims | None = None

    @classmethod
    def build(cls, settings: GatewaySettings) -> Services:
        # One credential choice for both signers: MPS calls and OSS download URLs.
        credentials = account_credentials(settings)
        http = open_upstream_http(settings, credentials)
        client = MpsClient(http, region=settings.region_id)
        shared: redis.asyncio.Redis | None = None
        budget: Budget
        cache: SnapshotCache
        claims: FailoverClaims | None = None
        if settings.redis_url is None:
            budget = LocalBudget.from_settings(settings)
            cache = LocalSnapshotCache.from_settings(settings)
        else:
            shared = open_redis(
                settings.redis_url.get_secret_value(), timeout=settings.redis_timeout
            )
            budget = _shared_budget(settings, shared)
            shared_cache = RedisSnapshotCache.from_settings(shared, settings)
            cache = FailoverCache(shared_cache, LocalSnapshotCache.from_settings(settings))
            claims = FailoverClaims(RedisFetchClaims.from_settings(shared, shared_cache, settings))
        fetcher = JobFetcher(
            client, budget, cache, claims=claims, retry=RetryPolicy.from_settings(settings)
        )
        return cls(
            http=http,
            client=client,
            budget=budget,
            cache=cache,
            fetcher=fetcher,
            redis=shared,
            claims=claims,
            presigner=OssPresigner(credentials),
        )

    async def aclose(self) -> None:
        # The fetcher first: its fetches use the HTTP client and its claim releases use Redis.
        try:
            await self.fetcher.aclose()
            await self.http.aclose()
        finally:
            if isinstance(self.budget, FailoverBudget) and isinstance(
                self.budget.primary, RedisBudget
            ):
                # Its pump first: it talks to Redis until stopped.
                await self.budget.primary.aclose()
            if self.redis is not None:
                await self.redis.aclose()

    async def probe_redis(self) -> bool:
        """Whether Redis answers a PING now (within the Redis timeout); False without Redis.

        An answer also serves as the failovers' probe when one is due: a process that makes no
        calls (idle behind a load balancer) has nothing else to notice that Redis is back with.
        """
        if self.redis is None:
            return False
        try:
            answered = bool(await self.redis.ping())
        except redis.exceptions.RedisError:
            return False
        if answered:
            for part in (self.budget, self.cache, self.claims):
                if isinstance(part, FailoverBudget | FailoverCache | FailoverClaims):
                    part.backend_answered()
        return answered

    def degraded(self) -> bool:
        """Whether a shared part is being served locally because Redis did not answer."""
        return any(
            isinstance(part, FailoverBudget | FailoverCache | FailoverClaims) and part.degraded
            for part in (self.budget, self.cache, self.claims)
        )


def _local_share(settings: GatewaySettings) -> GatewaySettings:
    """`settings` with `upstream_qps` cut to this process's share of the account's limit."""
    return settings.model_copy(update={"upstream_qps": settings.fallback_qps})


def _shared_budget(settings: GatewaySettings, shared: redis.asyncio.Redis) -> FailoverBudget:
    """The fleet's budget in Redis; while Redis does not answer, this process's share of the
    limit, so that `expected_replicas` processes that all lost Redis together stay under it."""
    return FailoverBudget(
        RedisBudget.from_settings(shared, settings),
        LocalBudget.from_settings(_local_share(settings)),
    )


def _budget_report(budget: Budget) -> dict[str, object]:
    report: dict[str, object] = {"shared": False}
    if isinstance(budget, FailoverBudget):
        status = budget.status()
        report = {"shared": not status.degraded, "failover": asdict(status)}
    return {**report, **asdict(budget.snapshot())}


def _cache_report(cache: SnapshotCache) -> dict[str, object]:
    if isinstance(cache, FailoverCache):
        status = cache.status()
        return {"shared": not status.degraded, "failover": asdict(status)}
    return {"shared": False}


def _claims_report(claims: FailoverClaims | None) -> dict[str, object]:
    if claims is None:
        return {"shared": False}
    status = claims.status()
    return {"shared": not status.degraded, "failover": asdict(status)}


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
    """Strawberry's ASGI app, giving each operation a fresh `Context`.

    Nothing a client sends makes it answer 5xx: a request it cannot read is answered 4xx with a
    coded GraphQL error (`gateway.http_errors`), a WebSocket frame as `gateway.api.websocket`
    says. It speaks `graphql-transport-ws` only: the older `graphql-ws` protocol
    (subscriptions-transport-ws, unmaintained) is refused with 4406.
    """

    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = GatewayWebSocketAdapter

    def __init__(self, settings: GatewaySettings, state: _AppState) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self._settings = settings
        self._state = state
        self._views = JobViews()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._serve_websocket(WebSocket(scope, receive=receive, send=send))
            return
        try:
            response = await self.run(Request(scope, receive=receive))
        except HTTPException as refused:
            # Strawberry's refusals (a body that is no GraphQL request, a method, GraphiQL
            # turned off), answered as GraphQL errors instead of plain text.
            allow = {"allow": "GET, POST"} if refused.status_code == 405 else None
            code = CODE_OF_STATUS.get(refused.status_code, BAD_REQUEST)
            response = ErrorResponse(refused.status_code, refused.reason, code, headers=allow)
        except ClientDisconnect:
            logger.debug("HTTP client left before its request body arrived")
            return
        await response(scope, receive, send)

    async def _serve_websocket(self, websocket: WebSocket) -> None:
        try:
            await self.run(websocket)
        except Exception:
            # A bug, not the client's doing: logged like a masked error, and the socket gets
            # a close frame (1011, internal error) instead of being dropped.
            correlation_id = uuid.uuid4().hex
            logger.exception("Unexpected error on a WebSocket (correlation id %s)", correlation_id)
            await close_quietly(
                websocket, 1011, f"Unexpected error (correlation id {correlation_id})."
            )

    def decode_json(self, data: str | bytes) -> object:
        # HTTP bodies, GET parameters and WebSocket frames alike.
        return client_json.decode(data)

    def parse_json(self, data: str | bytes) -> object:
        """A request body, or a GET request's `variables` or `extensions`: a JSON object (an
        array is a batch, which Strawberry refuses with its own message)."""
        try:
            value = self.decode_json(data)
        except client_json.MalformedJson as exc:
            raise HTTPException(400, exc.message) from exc
        if not isinstance(value, dict | list):
            raise HTTPException(
                400, f"Expected a JSON object, received {client_json.describe(value)}."
            )
        return value

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
            services, state.services = state.services, None
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
        degraded = configured and (not reachable or services.degraded())
        return JSONResponse(
            _camel_keys(
                {
                    "status": "degraded" if degraded else "ready",
                    "upstream": settings.upstream_kind.value,
                    "redis": {"configured": configured, "reachable": reachable},
                    "budget": _budget_report(services.budget),
                    "cache": _cache_report(services.cache),
                    "claims": _claims_report(services.claims),
                    "fetcher": asdict(services.fetcher.stats()),
                }
            )
        )

    middleware = [
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        Middleware(BodyReadTimeout, timeout=settings.body_timeout),
    ]
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
            # Every method: the view answers those it does not serve with a coded 405.
            Route("/graphql", graphql, methods=None),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
