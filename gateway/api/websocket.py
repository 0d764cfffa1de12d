"""GraphQL over WebSocket (`graphql-transport-ws`) as the gateway speaks it: Strawberry's handler,
with each frame checked against the protocol before it is acted on.

Whatever a client sends:
- a frame that is not a message of the protocol (not a JSON object, an unknown type, an id or a
  payload of the wrong type, a subscribe whose query is not a string...) closes the socket with
  4400 and a reason saying what was expected, as the protocol's reference server does;
- an operation that fails before it executes (syntax, token limit, validation, variables, too
  many operations) gets one `error` message whose errors carry `extensions.code`, and the socket
  stays open;
- the socket ends with a close frame (never a dropped connection); a client that left is one
  DEBUG line, not an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping

from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)

from gateway.api.client_json import describe
from gateway.api.context import Context
from gateway.api.persisted import PersistedQueries, PersistedQueryError
from gateway.observe.requests import current_request_id

logger = logging.getLogger(__name__)

#: Code of the `error` answering a subscribe beyond the connection's limit of operations.
TOO_MANY_OPERATIONS = "TOO_MANY_OPERATIONS"

#: The most a close frame's reason may hold (RFC 6455: 125 bytes of payload, 2 for the code).
_MAX_REASON_BYTES = 123

_PAYLOAD_OPTIONAL = ("connection_init", "ping", "pong")
_WITH_ID = ("subscribe", "complete")
_CLIENT_TYPES = (*_PAYLOAD_OPTIONAL, *_WITH_ID)


def protocol_violation(message: object) -> str | None:
    """Why `message` (a decoded frame) is not a client message of `graphql-transport-ws`, as a
    sentence; None when it is one. The rules are the protocol's, as its reference server
    (graphql-ws) checks them."""
    if not isinstance(message, dict):
        return f"Expected a message to be a JSON object, received {describe(message)}."
    kind = message.get("type")
    if kind not in _CLIENT_TYPES:
        shown = repr(kind)[:40] if isinstance(kind, str) else describe(kind)
        return f"Expected a message type among {', '.join(_CLIENT_TYPES)}, received {shown}."
    payload = message.get("payload")
    if kind in _PAYLOAD_OPTIONAL:
        if payload is not None and not isinstance(payload, dict):
            received = describe(payload)
            return f"Expected a {kind} payload to be an object or null, received {received}."
        return None
    operation_id = message.get("id")
    if not isinstance(operation_id, str) or not operation_id:
        received = "an empty string" if operation_id == "" else describe(operation_id)
        return f"Expected a {kind} id to be a non-empty string, received {received}."
    if kind == "complete":
        return None
    if not isinstance(payload, dict):
        return f"Expected a subscribe payload to be an object, received {describe(payload)}."
    query = payload.get("query")
    if not isinstance(query, str) and not (query is None and _names_persisted_query(payload)):
        return f"Expected the subscribe payload's query to be a string, received {describe(query)}."
    for field, kind_expected, expected in (
        ("variables", dict, "an object"),
        ("extensions", dict, "an object"),
        ("operationName", str, "a string"),
    ):
        value = payload.get(field)
        if value is not None and not isinstance(value, kind_expected):
            received = describe(value)
            return (
                f"Expected the subscribe payload's {field} to be {expected} or null, received "
                f"{received}."
            )
    return None


#: Close code of a socket whose caller is refused at `connection_init`, or whose token expired
#: (the protocol's "Forbidden").
FORBIDDEN_CLOSE = 4403


def _names_persisted_query(payload: Mapping[str, object]) -> bool:
    """Whether a subscribe payload names its document by hash (`extensions.persistedQuery`):
    its query may then be left out."""
    extensions = payload.get("extensions")
    return isinstance(extensions, dict) and extensions.get("persistedQuery") is not None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's `graphql-transport-ws` handler, answering every frame as the module says.

    A connection authenticated with a credential that expires (a JWT) is closed with 4403 when
    it does: its operations end with it, and the client reconnects with a fresh token.
    """

    _expiry: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        expires_at = self.context.caller.expires_at
        if self.connection_acknowledged and expires_at is not None and self._expiry is None:
            self._expiry = asyncio.create_task(self._close_at(expires_at))

    async def _close_at(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        logger.debug("WebSocket closed: its caller's token expired")
        await self.websocket.close(FORBIDDEN_CLOSE, "Token expired")

    async def shutdown(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        await super().shutdown()

    async def handle_message(self, message: Message) -> None:
        problem = protocol_violation(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload", {}) is None:
            # The protocol allows a null payload; Strawberry takes anything but an object for
            # a malformed one.
            message = {"type": "connection_init"}
        elif message["type"] == "subscribe":
            if self._at_operation_limit(message["id"]):
                await self._refuse_operation(message["id"])
                return
            if self._will_subscribe(message["id"]):
                resolved = await self._resolve_document(message)
                if resolved is None:
                    return
                message = resolved
        await super().handle_message(message)

    def _will_subscribe(self, operation_id: str) -> bool:
        # The subscribes Strawberry will run, rather than close the socket for (4401, 4409).
        return self.connection_acknowledged and operation_id not in self.operations

    async def _resolve_document(self, message: SubscribeMessage) -> SubscribeMessage | None:
        """`message` with the document it runs (its query, or the persisted one its extensions
        name), or None when the persisted-query rules refused it (an `error` message said so)."""
        persisted = getattr(self.view, "persisted_queries", None)
        if not isinstance(persisted, PersistedQueries):
            return message
        payload = message["payload"]
        try:
            query = await persisted.resolve(payload.get("query"), payload.get("extensions"))
        except PersistedQueryError as refused:
            error = refused.graphql_error(current_request_id())
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return None
        return {**message, "payload": {**payload, "query": query or ""}}

    def _at_operation_limit(self, operation_id: str) -> bool:
        # Checked where Strawberry checks it (after the acknowledgement and the id's
        # uniqueness, which close the socket), so that the refusal can carry a code.
        limit = self.max_subscriptions_per_connection
        return (
            limit is not None
            and self.connection_acknowledged
            and operation_id not in self.operations
            and len(self.operations) >= limit
        )

    async def _refuse_operation(self, operation_id: str) -> None:
        limit = self.max_subscriptions_per_connection
        extensions: dict[str, object] = {"code": TOO_MANY_OPERATIONS, "limit": limit}
        request_id = current_request_id()
        if request_id is not None:
            extensions["requestId"] = request_id
        error = GraphQLError(
            f"Expected at most {limit} operations in progress on one connection, received one "
            "more; complete one first.",
            extensions=extensions,
        )
        await self.send_message({"id": operation_id, "type": "error", "payload": [error.formatted]})

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        # Strawberry closes the socket (4400) on a syntax error or an operation it cannot pick.
        # They are the operation's failures, not the connection's: the protocol answers them
        # with an `error` message, which leaves the connection's other operations running.
        return None

    async def handle_task_exception(self, error: Exception) -> None:
        if isinstance(error, WebSocketDisconnected):
            logger.debug("WebSocket client left while an operation was answering it")
            return
        correlation_id = uuid.uuid4().hex
        logger.error(
            "Unexpected error in a WebSocket operation (correlation id %s)",
            correlation_id,
            exc_info=error,
        )


class GatewayWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's WebSocket adapter, for a socket that may have been closed by either side:
    sending to a closed socket is a disconnection, closing one twice does nothing, and a close
    reason is cut to what a close frame holds."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            raise WebSocketDisconnected
        await super().send_json(message)

    async def close(self, code: int, reason: str) -> None:
        await close_quietly(self.ws, code, reason)


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Closes `websocket` with `code` and `reason` (cut to fit a close frame), unless it is
    closed already or the client has left."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    fitted = reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")
    try:
        await websocket.close(code=code, reason=fitted)
    except WebSocketDisconnect:
        logger.debug("WebSocket client left before its close frame (%d) was sent", code)
