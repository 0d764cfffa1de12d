"""GraphQL over Server-Sent Events (the graphql-sse protocol, "distinct connections" mode) as
the gateway bounds it.

Strawberry speaks the protocol (`Accept: text/event-stream` on `/graphql`: a `next` event per
result, then `complete`); this module says which requests get a stream, and bounds what streams
may cost.

A request gets a stream when it accepts `text/event-stream` and either accepts no JSON (the
graphql-sse client: every operation, queries included, is a stream) or is a subscription (a
client such as urql lists both types on every request: its queries are answered as JSON, which
takes no stream). A persisted query is told by the document its hash names.

Streams are bounded:

- a process serves at most `max_streams` streams at once: one more is answered 503
  `TOO_MANY_STREAMS` (with `limit` and `Retry-After`), without running it;
- a stream whose client stops reading is dropped once a write has waited `write_timeout`:
  what waits for it is one event, never a growing buffer (the stream produces its next event
  only once the last one is written);
- keep-alive comments (`: ping`) go out every `keepalive` seconds between events, so that
  proxies keep an idle stream open and a vanished client is noticed at the next write.

Dropping a slow client needs the connection's `abort`, which `gateway.server` gives each
request's scope (`ABORT_EXTENSION`); under another server a slow client only holds its stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property

from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send
from strawberry.http.streaming import HTTPStreamTransport, SSETransport

from gateway.api import client_json
from gateway.api.http import accepts_json
from gateway.api.persisted import PersistedQueryError
from gateway.http_errors import ErrorResponse

logger = logging.getLogger(__name__)

#: Code of the 503 answering a stream beyond the process's limit.
TOO_MANY_STREAMS = "TOO_MANY_STREAMS"

#: The scope extension holding a callable that drops the request's connection at once.
ABORT_EXTENSION = "gateway.abort"

#: Seconds a refused client is told to wait before it tries again (`Retry-After`).
RETRY_AFTER = 1

#: The document a request runs, from its `query` and `extensions` (a persisted query's hash
#: names one); raises `PersistedQueryError` for a request that runs none.
Documents = Callable[[str | None, Mapping[str, object] | None], Awaitable[str | None]]


async def _is_subscription(request: Request, max_tokens: int, documents: Documents) -> bool:
    """Whether the GraphQL request is a subscription. Anything unreadable is not (plain HTTP
    then answers it with its coded error)."""
    if request.method == "GET":
        params = request.query_params
        fields: dict[str, object] = {
            "query": params.get("query"),
            "operationName": params.get("operationName"),
        }
        try:
            fields["extensions"] = client_json.decode(params.get("extensions") or "null")
        except client_json.MalformedJson:
            return False
    else:
        try:
            body = client_json.decode(await request.body())
        except client_json.MalformedJson:
            return False
        if not isinstance(body, dict):
            return False
        fields = body
    query, operation_name = fields.get("query"), fields.get("operationName")
    extensions = fields.get("extensions")
    if not isinstance(query, str | None) or not isinstance(operation_name, str | None):
        return False
    if not isinstance(extensions, dict | None):
        return False
    try:
        query = await documents(query, extensions)
    except PersistedQueryError:
        return False
    if query is None:
        return False
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation is OperationType.SUBSCRIPTION


class SseStreams:
    """The SSE streams of one process: counted, capped, and each with its writes bounded."""

    def __init__(
        self,
        *,
        max_streams: int,
        keepalive: float,
        write_timeout: float,
        max_tokens: int,
        documents: Documents,
    ) -> None:
        self.max_streams = max_streams
        self._max_tokens = max_tokens
        self._documents = documents
        self.write_timeout = write_timeout
        self._keepalive = keepalive
        self._open = 0

    @cached_property
    def transport(self) -> HTTPStreamTransport:
        """Strawberry's SSE transport, with this process's keep-alive interval."""
        return SSETransport(heartbeat_interval=self._keepalive)

    @property
    def open(self) -> int:
        """Streams being served now."""
        return self._open

    async def wants_stream(self, request: Request) -> bool:
        """Whether `request` is answered with a stream (see the module). May read its body."""
        accept = request.headers.get("accept", "")
        if not self.transport.accepts(accept):
            return False
        return not accepts_json(accept) or await _is_subscription(
            request, self._max_tokens, self._documents
        )

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        answer: Callable[[Send], Awaitable[None]],
    ) -> None:
        """Runs `answer` (an awaitable taking the `send` to write with) as one stream of the
        process, or refuses it with 503 when the process serves `max_streams` already."""
        if self._open >= self.max_streams:
            refusal = ErrorResponse(
                503,
                f"Expected at most {self.max_streams} event streams at once on this process, "
                "received one more; try again later, or another replica.",
                TOO_MANY_STREAMS,
                headers={"retry-after": str(RETRY_AFTER)},
                limit=self.max_streams,
            )
            await refusal(scope, receive, send)
            return
        self._open += 1
        try:
            await answer(self._bounded(scope, send))
        finally:
            self._open -= 1

    def _bounded(self, scope: Scope, send: Send) -> Send:
        """`send`, with each write of the body waiting at most `write_timeout` for the client:
        beyond it, the connection is dropped (and every later write is a no-op)."""
        abort: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
        if abort is None:
            return send
        timeout = self.write_timeout
        dropped = False

        async def bounded_send(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            try:
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                dropped = True
                logger.debug(
                    "Dropping an event stream whose client read nothing for %.1f s", timeout
                )
                # Aborting ends the connection at once: the server then reports the client
                # gone, and the response (with its subscription) is cancelled.
                assert abort is not None
                abort()

        return bounded_send
