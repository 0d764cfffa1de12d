"""`create_app(settings)`: the gateway as a Starlette app.

The lifespan builds the parts every request shares (one upstream HTTP client, one budget, one
cache, one fetcher) and closes them; each GraphQL request gets its own loader (see
`GatewayGraphQL.get_context`). Nothing is built at import time. Each app has its own metrics
(served at /metrics, or on GATEWAY_METRICS_PORT) and, when the OTEL_* variables ask for it,
traces (`gateway.observe`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import cached_property
from types import FrameType
from typing import TYPE_CHECKING

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.streaming import HTTPStreamTransport
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from gateway.adaptive_limit import AdaptiveLimit
from gateway.admission import (
    TIMEOUT_HEADER,
    Admission,
    RequestDeadline,
    deadline_of,
    request_timeout,
)
from gateway.answers.http import CALLER_SCOPE_KEY, SCOPE_KEY, AnswerCache, KeptAnswers
from gateway.answers.store import AnswerStore
from gateway.api import client_json
from gateway.api.cacheability import Cacheability
from gateway.api.context import Context, waits_end
from gateway.api.http import (
    BATCH_REFUSAL,
    JSON,
    PLAIN_HTTP_OPERATIONS,
    answer,
    body_type_refusal,
    method_refusal,
    operation_type_refusal,
    response_media_type,
)
from gateway.api.persisted import PersistedQueries, PersistedQueryError
from gateway.api.schema import build_schema
from gateway.api.sse import SseStreams
from gateway.api.views import JobViews
from gateway.api.websocket import GatewayWebSocketAdapter, TransportWSHandler, close_quietly
from gateway.banner import announce
from gateway.callers.api_keys import ApiKeysFileError
from gateway.callers.authenticator import Authenticator, credential_headers
from gateway.callers.caller import NOBODY, UNAUTHENTICATED_OPERATOR, Caller
from gateway.callers.jwks import KeySetError
from gateway.callers.rate import TenantRateLimit
from gateway.cors import browser_origins, cors_middleware
from gateway.errors import Unauthenticated
from gateway.graphiql import FILES_ROUTE, GraphiQL
from gateway.health import Health, ServeHealth
from gateway.http_errors import BAD_REQUEST, CODE_OF_STATUS, ErrorResponse, HttpRefusal
from gateway.instruments import Instruments
from gateway.middleware import BodyReadTimeout, BodySizeLimit
from gateway.observe.exposition import MetricsListener, ServeMetrics, health_report
from gateway.observe.metrics import Metrics
from gateway.observe.requests import RequestObserver
from gateway.observe.tracing import tracing_from_env
from gateway.persisted import ManifestError, load_manifest
from gateway.persisted.registrations import RegistrationLimits
from gateway.services import Services
from gateway.settings import GatewaySettings
from gateway.startup import refuse, settings_or_exit
from gateway.upstream import embedded_simulator

if TYPE_CHECKING:
    from gateway.observe.otel import Tracing

logger = logging.getLogger(__name__)

#: Highest the adaptive limit of requests running at once climbs without
#: GATEWAY_MAX_CONCURRENT_REQUESTS: more than a process ever runs, so in effect no limit.
ADAPTIVE_CEILING = 10_000
#: Lowest it goes: a burst of a few dozen requests is what one page or one frontend sends at
#: once, and its first requests' parsing alone can make the last ones wait past the target;
#: shedding there would refuse a burst the process serves in time. Under real overload the
#: limit still falls to this, which is what bounds answer times (docs/budget-benchmarks.md).
ADAPTIVE_FLOOR = 64

#: Seconds between two samplings of the gauges read from state (the budget's limits...).
SAMPLE_INTERVAL = 1.0

#: Whether the HTTP request being served is answered with an event stream (set per request).
_ANSWERED_AS_STREAM: ContextVar[bool] = ContextVar("answered_as_stream", default=False)

IDEMPOTENCY_HEADER = "idempotency-key"


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app, giving each operation a fresh `Context`.

    Nothing a client sends makes it answer 5xx: a request it cannot read is answered 4xx with a
    coded GraphQL error (`gateway.http_errors`), a WebSocket frame as `gateway.api.websocket`
    says. It speaks `graphql-transport-ws` only: the older `graphql-ws` protocol
    (subscriptions-transport-ws, unmaintained) is refused with 4406. A request that accepts
    `text/event-stream` is answered as an event stream (graphql-sse), bounded as
    `gateway.api.sse` says.
    """

    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = GatewayWebSocketAdapter

    def __init__(
        self,
        settings: GatewaySettings,
        state: _AppState,
        instruments: Instruments,
        graphiql: GraphiQL | None = None,
        trusted_documents: Mapping[str, str] | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        tracing = instruments.tracing
        schema = build_schema(
            settings,
            observer=instruments.api,
            extensions=() if tracing is None else (tracing.schema_extension(),),
        )
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql is not None else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
            # Pages of other origins open WebSockets as they call over HTTP: the origins CORS
            # admits (Strawberry refuses every cross-origin handshake otherwise).
            allowed_origins=browser_origins(settings),
        )
        self._settings = settings
        self._state = state
        self._views = JobViews()
        self._observer = instruments.api
        self._graphiql = graphiql
        self._authenticator = authenticator or Authenticator()
        self._rate_limit = (
            TenantRateLimit(settings.tenant_qps) if settings.tenant_qps is not None else None
        )
        #: What each request runs when it names a persisted query (the WebSocket handler reads
        #: it too).
        self.persisted_queries = PersistedQueries(
            store=lambda: state.services.documents,
            parses=schema.documents.parses,
            apq=settings.apq,
            trusted=trusted_documents,
            max_document_bytes=settings.apq_max_document_bytes,
            registrations=RegistrationLimits(
                per_second=settings.apq_registrations_per_second,
                burst=settings.apq_registration_burst,
                bytes_per_ttl=settings.apq_registered_bytes_per_ttl,
                ttl=settings.apq_ttl,
            ),
            observer=instruments.api,
        )
        self._sse = SseStreams(
            max_streams=settings.sse_max_streams,
            keepalive=settings.sse_keepalive,
            write_timeout=settings.sse_write_timeout,
            max_tokens=settings.max_tokens,
            documents=self.persisted_queries.resolve,
        )

    @cached_property
    def _stream_transport_map(self) -> dict[str, HTTPStreamTransport]:
        # Only graphql-sse, with the process's keep-alive (Strawberry would also take
        # multipart subscriptions, which the gateway does not offer).
        transport = self._sse.transport
        return {transport.protocol: transport}

    def _get_stream_transport_from_headers(
        self, headers: Mapping[str, str]
    ) -> HTTPStreamTransport | None:
        # Strawberry streams whenever Accept lists text/event-stream; the gateway decides per
        # request (`gateway.api.sse`: a query that also accepts JSON is answered as JSON).
        return self._sse.transport if _ANSWERED_AS_STREAM.get() else None

    @property
    def sse(self) -> SseStreams:
        """The process's event streams."""
        return self._sse

    @property
    def rate_limit(self) -> TenantRateLimit | None:
        """Operations per second per tenant (None: unlimited); kept answers take from it too."""
        return self._rate_limit

    async def render_graphql_ide(self, request: Request) -> Response:
        # Our page, not Strawberry's (which loads its files from a CDN). Strawberry calls this
        # only when `graphql_ide` is set, that is when there is a GraphiQL.
        assert self._graphiql is not None
        return self._graphiql.page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._serve_websocket(WebSocket(scope, receive=receive, send=send))
            return
        request = Request(scope, receive=receive)
        if request.method not in PLAIN_HTTP_OPERATIONS:
            refusal = method_refusal(request.method)
            await refusal.response(response_media_type(request.headers.get("accept")))(
                scope, receive, send
            )
            return
        try:
            stream = await self._sse.wants_stream(request)
        except ClientDisconnect:
            logger.debug("HTTP client left before its request body arrived")
            return
        # Read by Strawberry's choice of a transport, and by get_context, in this request's
        # task: they see only the headers, and the decision needs the operation.
        _ANSWERED_AS_STREAM.set(stream)
        if stream:
            await self._sse.serve(
                scope, receive, send, lambda bounded: self._serve_http(request, bounded)
            )
            return
        await self._serve_http(request, send)

    async def _serve_http(self, request: Request, send: Send) -> None:
        scope, receive = request.scope, request.receive
        accept = request.headers.get("accept")
        try:
            response = await self.run(request)
        except HttpRefusal as refused:
            response = refused.response(response_media_type(accept))
        except Unauthenticated as refused:
            # RFC 6750: a 401 names the schemes the client may use.
            response = ErrorResponse(
                401,
                refused.message,
                refused.code,
                headers={"www-authenticate": self._authenticator.challenge},
                media_type=response_media_type(accept),
            )
        except PersistedQueryError as refused:
            response = ErrorResponse(
                refused.status,
                refused.message,
                refused.code,
                headers=refused.headers,
                media_type=response_media_type(accept),
            )
        except HTTPException as refused:
            # Strawberry's other refusals (GraphiQL turned off, a multipart body), answered as
            # GraphQL errors instead of plain text.
            code = CODE_OF_STATUS.get(refused.status_code, BAD_REQUEST)
            response = ErrorResponse(
                refused.status_code, refused.reason, code, media_type=response_media_type(accept)
            )
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

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET naming a persisted query has no `query` parameter, like a browser's visit.
        return "extensions" not in request.query_params and super().should_render_graphql_ide(
            request
        )

    def decode_json(self, data: str | bytes) -> object:
        # HTTP bodies, GET parameters and WebSocket frames alike.
        return client_json.decode(data)

    def parse_json(self, data: str | bytes) -> object:
        """A request body, or a GET request's `variables` or `extensions`: a JSON object (an
        array is a batch, refused by `_validate_batch_request`)."""
        try:
            value = self.decode_json(data)
        except client_json.MalformedJson as exc:
            raise HTTPException(400, exc.message) from exc
        if not isinstance(value, dict | list):
            raise HTTPException(
                400, f"Expected a JSON object, received {client_json.describe(value)}."
            )
        return value

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST":
            refusal = body_type_refusal(request.headers.get("content-type"))
            if refusal is not None:
                raise refusal
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):
            if not isinstance(data.operation_name, str | None):
                raise HttpRefusal(
                    400,
                    "Expected the GraphQL request's `operationName` to be a string or null, "
                    f"received {client_json.describe(data.operation_name)}.",
                    BAD_REQUEST,
                )
            # The request's document: its text, or the persisted one its extensions name.
            data.query = await self.persisted_queries.resolve(data.query, data.extensions)
        return data

    def _validate_batch_request(
        self, request_data: list[GraphQLRequestData], protocol: str = "http"
    ) -> None:
        # Strawberry's check of a JSON array body; batches are off, so it always refuses.
        raise HttpRefusal(400, BATCH_REFUSAL, BAD_REQUEST)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Strawberry's, with the operations plain HTTP serves (no subscription: it needs a
        # transport that streams) and coded refusals.
        method = request_adapter.method
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=PLAIN_HTTP_OPERATIONS[method],
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as refused:
            raise operation_type_refusal(refused.operation_type, method) from refused
        except CannotGetOperationTypeError as refused:
            raise HttpRefusal(
                400,
                "Expected a document with an operation to run, received none.",
                BAD_REQUEST,
            ) from refused
        except MissingQueryError as refused:
            raise HttpRefusal(
                400, "Expected a GraphQL request with a `query`, received none.", BAD_REQUEST
            ) from refused

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request.headers.get("accept"))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        # Strawberry's, with the media type the client accepts and the status the
        # GraphQL-over-HTTP rules give it (`gateway.api.http`). Batches are refused earlier.
        assert not isinstance(response_data, list)
        media_type = sub_response.media_type or JSON
        status, body = answer(response_data, media_type)
        response = Response(self.encode_json(body), status_code=status, media_type=media_type)
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        services = self._state.services
        # Over HTTP, from the request's arrival (`Admission`); a WebSocket's operations each
        # get theirs when they start (`Context.for_operation`).
        deadline = deadline_of(request.scope)
        if deadline is None:
            timeout = request_timeout(
                self._settings.request_deadline, request.headers.get(TIMEOUT_HEADER)
            )
            deadline = RequestDeadline(time.monotonic() + timeout, timeout)
        if isinstance(request, WebSocket):
            caller = await self._websocket_caller(request)
            transport = "websocket"
        else:
            caller = await self._http_caller(request)
            transport = "sse" if _ANSWERED_AS_STREAM.get() else "http"
        return Context(
            caller=caller,
            default_tenant=self._settings.default_tenant,
            rate_limit=self._rate_limit,
            deadline=waits_end(deadline.at, deadline.timeout),
            timeout=deadline.timeout,
            max_ids=self._settings.max_ids,
            max_page_size=self._settings.max_page_size,
            fetcher=services.fetcher,
            presigner=services.presigner,
            views=self._views,
            per_connection=isinstance(request, WebSocket),
            transport=transport,
            observer=self._observer,
            submitter=services.submitter,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            region=self._settings.region_id,
            cacheability=_cacheability(request),
        )

    async def _http_caller(self, request: Request) -> Caller:
        """The caller of an HTTP request (SSE included), or Unauthenticated (a 401). A browser
        opening GraphiQL's page sends no credential (its Headers tab sends them with each
        query): the page is served to anyone, and runs nothing."""
        known = request.scope.get(CALLER_SCOPE_KEY)
        if isinstance(known, Caller):
            return known  # authenticated already, by the kept answers' lookup
        try:
            return await self._authenticator.caller(request.headers)
        except Unauthenticated:
            if self._graphiql is not None and self.should_render_graphql_ide(
                self.request_adapter_class(request)
            ):
                return NOBODY
            raise

    async def _websocket_caller(self, websocket: WebSocket) -> Caller:
        """The caller a WebSocket starts with: from its upgrade request's headers when they
        hold a credential the gateway accepts (servers can send headers; browsers cannot), else
        nobody until its `connection_init` (see `on_ws_connect`)."""
        if not self._authenticator.enabled:
            return UNAUTHENTICATED_OPERATOR
        try:
            return await self._authenticator.caller(websocket.headers)
        except Unauthenticated:
            return NOBODY

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticates a WebSocket at its `connection_init`: from the payload's
        `Authorization` (or `x-api-key`) when it holds one, else from the upgrade request's
        headers. Refused, the socket closes with 4403."""
        headers = credential_headers(context.connection_params or {})
        if self._authenticator.enabled and (
            "authorization" in headers or "x-api-key" in headers or context.caller is NOBODY
        ):
            try:
                context.caller = await self._authenticator.caller(headers)
            except Unauthenticated as refused:
                logger.debug("WebSocket refused at connection_init: %s", refused.reason)
                raise ConnectionRejectionError from None
        return await super().on_ws_connect(context)


def _cacheability(request: Request | WebSocket) -> Cacheability | None:
    """The verdict `AnswerCache` left in the scope for this request, if it would keep it."""
    verdict = request.scope.get(SCOPE_KEY)
    return verdict if isinstance(verdict, Cacheability) else None


def answers_fingerprint(
    schema_text: str, settings: GatewaySettings, trusted: Mapping[str, str] | None
) -> str:
    """What shapes an answer besides the request: the schema, the settings answers depend on
    (persisted queries and the trusted documents included: what may run at all), and the
    gateway's version. Kept answers (and Redis's, across a rolling deploy) are keyed by it, so
    a gateway that would answer otherwise never serves another's."""
    try:
        version = importlib.metadata.version("mps-gateway")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    parts = [
        ANSWER_FORMAT,
        version,
        schema_text,
        str(settings.max_page_size),
        str(settings.max_ids),
        str(settings.max_cost),
        settings.region_id,
        str(settings.apq),
        # Whose jobs submitted outside the gateway are: who sees them.
        str(settings.default_tenant),
        "any" if trusted is None else ",".join(sorted(trusted)),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


#: Bump when the gateway answers the same request differently with the same schema.
ANSWER_FORMAT = "answers-1"


async def _sample_every(metrics: Metrics, interval: float) -> None:
    """Sample the gauges read from state every `interval` seconds, so that a scrape of another
    process (multiprocess mode) or of the private listener reads fresh values."""
    while True:
        metrics.sample()
        await asyncio.sleep(interval)


def _on_sigterm(
    drain: Callable[[], None], action: Callable[[], None], grace: float
) -> Callable[[], None]:
    """On SIGTERM, `drain()` at once, then after `grace` seconds `action()` and the server's
    own handler (which stops accepting and waits for requests under way); a second SIGTERM
    skips what is left of the grace. Returns what undoes it.

    `drain` turns /readyz to `stopping`, so that load balancers stop sending requests while the
    process still serves them (a rolling restart loses none). The server waits for every request
    before it shuts the app down, so requests waiting for a budget slot would otherwise run to
    their deadline: `action` answers them at once. Only the main thread can take signals (a
    server run in a thread, as tests do, gets nothing).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    grace_timer: asyncio.TimerHandle | None = None
    stopped = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal grace_timer, stopped
        if grace_timer is not None:
            grace_timer.cancel()
            grace_timer = None
        if not stopped:
            stopped = True
            action()
        if callable(previous):
            previous(signum, frame)

    def begin(signum: int, frame: FrameType | None) -> None:
        nonlocal grace_timer
        drain()
        if stopped or grace_timer is not None or grace <= 0:
            stop(signum, frame)
            return
        logger.info("SIGTERM: draining for %g s (GATEWAY_SHUTDOWN_GRACE) before stopping", grace)
        grace_timer = loop.call_later(grace, stop, signum, frame)

    def handle(signum: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the loop anywhere: it only hands the work to the loop.
        loop.call_soon_threadsafe(begin, signum, frame)

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


def _simulator_admin(simulator: Starlette | None) -> list[Route]:
    """The embedded simulator's admin API (`GET /_simulator/jobs` lists the moving demo jobs
    the start banner names), reachable where the demo is: its whole app behind a route that
    keeps the path, so that only its `/_simulator/...` routes answer (its RPC endpoint is `/`).
    Nothing of it guards anything: it holds demo data only, and exists only when embedded."""
    if simulator is None:
        return []
    return [Route("/_simulator/{path:path}", simulator, methods=None)]


def create_app(
    settings: GatewaySettings | None = None,
    *,
    simulator: Starlette | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The gateway app. Reads the environment only when `settings` is not given.

    On its embedded simulator (no credentials, no endpoint) the gateway calls `simulator`, or a
    new one made now (whose moving demo jobs start now), and serves that simulator's admin routes
    at `/_simulator/...`; any other upstream serves no such route, and a `simulator` given with
    it is a ValueError. It traces into `tracing` when one is given, else as the OTEL_*
    variables say (`gateway.observe.tracing`)."""
    if settings is None:
        # Started by `uvicorn --factory gateway.app:create_app` (each worker calls it): the
        # same refusal of a bad setting, the same banner and warnings as `serve`.
        settings = settings_or_exit(GatewaySettings)
        try:
            app = create_app(settings, simulator=simulator, tracing=tracing)
        except (KeySetError, ApiKeysFileError) as exc:
            # A key set or API keys file that cannot be used: one line, never its content.
            refuse([f"bad settings: {exc}"])
        except ManifestError as exc:
            refuse([str(exc)])
        announce(settings, None)
        return app
    simulator = embedded_simulator(settings, simulator)
    state = _AppState()
    health = Health(settings, lambda: state.services if state.started else None)
    tracing = tracing if tracing is not None else tracing_from_env()
    metrics = Metrics()
    instruments = Instruments(metrics, tracing)
    graphiql = GraphiQL.from_settings(settings) if settings.graphiql else None
    trusted = (
        None if settings.trusted_documents is None else load_manifest(settings.trusted_documents)
    )
    authenticator = Authenticator.from_settings(settings)
    graphql = GatewayGraphQL(
        settings, state, instruments, graphiql, trusted, authenticator=authenticator
    )
    kept = KeptAnswers(
        AnswerStore(
            settings.answer_cache_bytes, max_answer_bytes=settings.answer_cache_max_answer_bytes
        )
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.services = services = Services.build(
            settings, simulator=simulator, instruments=instruments
        )
        kept.shared = services.answers
        kept.versions = services.fetcher.versions
        services.kept = kept if kept.store.enabled else None
        sampling = asyncio.create_task(_sample_every(metrics, SAMPLE_INTERVAL))
        listener = None
        if settings.metrics_port is not None:
            listener = MetricsListener(
                metrics,
                settings.metrics_host,
                settings.metrics_port,
                report=health_report(health.answer, asyncio.get_running_loop()),
            )
            logger.info("Metrics at http://%s:%d/metrics", settings.metrics_host, listener.port)
        restore = _on_sigterm(
            health.begin_draining, services.begin_shutdown, settings.shutdown_grace
        )
        logger.info(
            "Gateway started: upstream %s (%s), budget %d calls/s, callers %s",
            settings.upstream_kind.value,
            settings.upstream_url,
            settings.upstream_qps,
            ", ".join(sorted(settings.auth_methods)) or "unauthenticated (GATEWAY_AUTH=none)",
        )
        if trusted is not None:
            logger.info(
                "Trusted documents: %d from %s; no other document runs",
                len(trusted),
                settings.trusted_documents,
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
            kept.shared = None
            sampling.cancel()
            await authenticator.aclose()
            try:
                await services.aclose()
            finally:
                if listener is not None:
                    await asyncio.to_thread(listener.close)
                metrics.close()
                if tracing is not None:
                    tracing.shutdown()

    middleware = [
        # First after CORS (a refusal still gets its headers): a request shed here costs
        # nothing more, its body unread.
        Middleware(
            Admission,
            default_timeout=settings.request_deadline,
            max_wait=settings.admission_max_wait or None,
            max_concurrent=settings.max_concurrent_requests or None,
            adaptive=(
                AdaptiveLimit(
                    target_wait=settings.admission_target_wait,
                    ceiling=settings.max_concurrent_requests or ADAPTIVE_CEILING,
                    floor=ADAPTIVE_FLOOR,
                )
                if settings.admission_target_wait
                else None
            ),
            shed=instruments.shed,
        ),
        Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        Middleware(BodyReadTimeout, timeout=settings.body_timeout),
    ]
    if kept.store.enabled:
        # Inside the body's limits (it reads bodies), outside everything GraphQL: a repeat is
        # answered before any of it runs.
        middleware.append(
            Middleware(
                AnswerCache,
                kept=kept,
                fingerprint=answers_fingerprint(graphql.schema.as_str(), settings, trusted),
                running_ttl=settings.cache_running_ttl,
                # A hash alone names a document only where persisted queries run.
                hashes=settings.apq or trusted is not None,
                authenticator=authenticator,
                rate_limit=graphql.rate_limit,
                lifetime=settings.cache_terminal_ttl,
                observer=instruments.api,
                memory=instruments.answers("memory"),
                redis=instruments.answers("redis"),
            )
        )
        metrics.add_sampler(lambda: metrics.answer_bytes.set(kept.store.bytes))
    cors = cors_middleware(settings)
    if cors is not None:
        middleware.insert(0, cors)
    # Outermost first: /metrics, /healthz and /readyz answered before anything else (no CORS,
    # no request id, no access line for every probe of an orchestrator); then
    # the trace's server span, so that everything below runs inside it; then the request id,
    # so that every line the rest logs carries it.
    middleware[:0] = [
        Middleware(ServeHealth, health=health),
        *([] if settings.metrics_port is not None else [Middleware(ServeMetrics, metrics=metrics)]),
        *([] if tracing is None else [tracing.middleware()]),
        Middleware(
            RequestObserver,
            refused=lambda: instruments.api.operation("none", "client_error", None),
            access_log=settings.access_log,
        ),
    ]
    return Starlette(
        routes=[
            # Every method: the view answers those it does not serve with a coded 405.
            Route("/graphql", graphql, methods=None),
            WebSocketRoute("/graphql", graphql),
            # The files GraphiQL's page loads (none while GraphiQL is off).
            *([Route(FILES_ROUTE, graphiql.file)] if graphiql else []),
            *_simulator_admin(simulator),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
