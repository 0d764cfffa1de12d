"""`Tracing`: the OpenTelemetry pieces of a traced gateway (needs the `otel` extra).

The spans of a request, and who makes them:

    POST /graphql                      the ASGI instrumentation (continues the `traceparent`)
      GraphQL Query[: <name>]          strawberry's extension (parsing and validation under it)
        GraphQL Resolving: <root field>  (root fields only: a job's fields make none)
          jobs batch                   the loader's batch: one `JobFetcher.get_many`
            MGET, EVALSHA, ...         the Redis instrumentation, one per round trip
            budget wait                each wait for a budget slot
            MPS <action>               each upstream call, with its RequestId

Library instrumentation where a library exists; the budget and upstream spans are the
gateway's own (`gateway.instruments`), since only it knows a wait's outcome and a call's
RequestId.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from inspect import isawaitable
from typing import Any, Final

from graphql import GraphQLResolveInfo
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from starlette.middleware import Middleware
from strawberry.extensions import SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension

__all__ = ["Tracing"]

logger = logging.getLogger(__name__)

#: The service name when OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) gives none.
DEFAULT_SERVICE_NAME: Final = "mps-gateway"
#: Requests that make no trace: scrapes and probes (regular expressions, as the ASGI
#: instrumentation takes them).
UNTRACED_PATHS: Final = "/metrics$,/healthz$,/readyz$"


class Tracing:
    """Spans from a `provider`: the gateway's own (`tracer`), and the libraries' it wires."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        self.provider = provider
        #: The tracer of the gateway's own spans.
        self.tracer = provider.get_tracer("gateway")
        self._owned = owned

    @classmethod
    def from_exporters(cls, names: Sequence[str]) -> Tracing:
        """A provider exporting to the exporters named (entry points of
        `opentelemetry_traces_exporter`, each reading its own OTEL_EXPORTER_* variables),
        made the SDK's global one; an exporter that is not installed is skipped, said once."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        for name in names:
            found = entry_points(group="opentelemetry_traces_exporter", name=name)
            if not found:
                logger.warning(
                    "No trace exporter named %r is installed: its spans are not sent", name
                )
                continue
            exporter: type[SpanExporter] = next(iter(found)).load()
            provider.add_span_processor(BatchSpanProcessor(exporter()))
        trace.set_tracer_provider(provider)
        return cls(provider, owned=True)

    def middleware(self) -> Middleware:
        """A server span per HTTP request and WebSocket connection, continuing the W3C
        `traceparent` the client sent."""
        return Middleware(
            OpenTelemetryMiddleware,
            excluded_urls=UNTRACED_PATHS,
            tracer_provider=self.provider,
            # A span per ASGI message would outnumber the request's own.
            exclude_spans=["receive", "send"],
        )

    def schema_extension(self) -> Callable[[], SchemaExtension]:
        """The factory of the GraphQL operation's spans (one extension per operation)."""
        provider = self.provider
        return lambda: OperationTracing(tracer_provider=provider)

    def instrument_redis(self, client: Any) -> None:
        """A span for each round trip of `client` (commands sanitized: `MGET ? ?`)."""
        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Send the spans still batched, if this process's provider is this one's."""
        if self._owned:
            self.provider.shutdown()


class OperationTracing(OpenTelemetryExtension):
    """Strawberry's OpenTelemetry extension, with resolver spans for the root fields only:
    a `jobs` query of 100 ids would otherwise make a span for every field of every job."""

    async def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: str,
        **kwargs: Any,
    ) -> Any:
        if info.path.prev is None:
            return await super().resolve(_next, root, info, *args, **kwargs)
        result = _next(root, info, *args, **kwargs)
        if isawaitable(result):
            awaited: Awaitable[Any] = result
            return await awaited
        return result
