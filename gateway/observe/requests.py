"""Request ids and the access log: `RequestObserver`, plain ASGI middleware.

Every HTTP request and WebSocket connection gets a request id: the client's `x-request-id`
when it sends a usable one (1 to 128 characters among letters, digits and `._:/+=@-`; anything
else is replaced, never echoed), else a new one. It is answered in the `x-request-id` header,
carried by every log line written while the request is served (a `contextvars` variable, which
the tasks a request starts inherit), and by every error the request answers
(`extensions.requestId`). At the end of each request one access line is logged at INFO on
`gateway.access`: method, path, status, milliseconds and the GraphQL operation (its type and
name, as `gateway.api` recorded them here). When the process's logging is the gateway's own
(`gateway.observe.logs.configure_logging`), the request hands its handler the line's facts, one
tuple (`AccessLine`'s fields), and the handler makes them lines and writes them in batches, off
the request's path; otherwise (another logging set-up, tests) the line is a standard record of
`gateway.access`, made only when that logger writes INFO.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "AccessFacts",
    "AccessLine",
    "RequestInfo",
    "RequestObserver",
    "access_sink",
    "current_request",
    "current_request_id",
    "describe_operation",
    "printable_path",
    "set_access_sink",
]

access_logger = logging.getLogger("gateway.access")

#: The header a client may name its request with, and the gateway answers the id in.
REQUEST_ID_HEADER: Final = "x-request-id"
_HEADER_BYTES: Final = REQUEST_ID_HEADER.encode()
_USABLE_ID: Final = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
#: Longest path and operation name an access line repeats (they come from the client).
MAX_PATH: Final = 200
_MAX_NAME: Final = 64


@dataclass(slots=True)
class RequestInfo:
    """What the gateway knows of the request being served, shared by the layers that serve it."""

    request_id: str
    #: The GraphQL operation, as `describe_operation` says it; None until one is known.
    operation: str | None = None
    #: Whether the request's GraphQL operation was counted in the metrics already.
    counted: bool = False


class AccessLine(NamedTuple):
    """One access line's facts, in the order `RequestObserver` hands them to an access sink:
    as a plain tuple (`AccessFacts`), since making one of these costs a Python call on every
    request's path. The path as the request named it (cut to 200 characters), and the duration
    in seconds: making the one printable and rounding the other wait until the line is written,
    off the request's path."""

    created: float
    request_id: str
    method: str
    path: str
    status: int
    seconds: float
    operation: str | None


#: What an access sink takes: `AccessLine`'s fields, in its order.
AccessFacts = tuple[float, str, str, str, int, float, str | None]

#: Where access lines go when the gateway configured the process's logging; None: the
#: `gateway.access` logger, a record per line. Process-wide, as the logging set-up is.
_access_sink: Callable[[AccessFacts], None] | None = None


def access_sink() -> Callable[[AccessFacts], None] | None:
    """Where access lines go now (None: the `gateway.access` logger)."""
    return _access_sink


def set_access_sink(sink: Callable[[AccessFacts], None] | None) -> None:
    """Send access lines to `sink` instead of making a record of each (None: records again)."""
    global _access_sink
    _access_sink = sink


#: The message of an access line: method, path, status, milliseconds, operation (or "-").
ACCESS_FORMAT: Final = "%s %s %d %.1f ms %s"

_current: ContextVar[RequestInfo | None] = ContextVar("gateway_request", default=None)


def current_request() -> RequestInfo | None:
    """The request being served in this context, if any."""
    return _current.get()


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    info = _current.get()
    return None if info is None else info.request_id


def describe_operation(operation_type: str, name: str | None) -> str:
    """`query` or `query JobsPage`: a client's operation name cut to 64 characters, and only
    its GraphQL name characters kept (a valid document's names have no others)."""
    if not name:
        return operation_type
    kept = "".join(char for char in name[:_MAX_NAME] if char.isalnum() or char == "_")
    return f"{operation_type} {kept}" if kept else operation_type


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == _HEADER_BYTES:
            if _USABLE_ID.fullmatch(value):
                return bytes(value).decode()
            break
    return secrets.token_hex(16)


def printable_path(path: str) -> str:
    """The path as an access line repeats it: at most 200 characters, none that would break
    the line (a percent-decoded path may hold a newline, which must not start a fake line)."""
    return _printable(path, MAX_PATH)


def _printable(text: str, limit: int) -> str:
    cut = text[:limit]
    # The path is percent-decoded: it may hold a newline, which must not start a fake line.
    return cut if cut.isprintable() else "".join(c if c.isprintable() else "?" for c in cut)


class RequestObserver:
    """See the module docstring. `refused` is called at the end of an HTTP request that
    answered 4xx before any GraphQL operation was counted (a body too large, unreadable...);
    `access_log` False writes no access lines (the ids are kept)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        refused: Callable[[], None] | None = None,
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.refused = refused
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(_request_id(scope))
        header = (_HEADER_BYTES, info.request_id.encode())
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                status = message.get("status", 101)
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif kind == "websocket.close" and not status:
                status = 403  # closed before it was accepted: the handshake is refused
            await send(message)

        token = _current.set(info)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            try:
                refused = kind == "http" and 400 <= status < 500 and not info.counted
                if refused and self.refused is not None:
                    self.refused()
                if self.access_log:
                    sink = _access_sink
                    if sink is not None:
                        path = scope["path"]
                        if len(path) > MAX_PATH:  # not held long while it waits to be written
                            path = path[:MAX_PATH]
                        # The request's only cost of its line: one tuple handed over.
                        sink(
                            (
                                time.time(),
                                info.request_id,
                                scope.get("method", "WEBSOCKET"),
                                path,
                                status,
                                time.perf_counter() - started,
                                info.operation,
                            )
                        )
                    elif access_logger.isEnabledFor(logging.INFO):
                        self._log(scope, status, time.perf_counter() - started, info)
            finally:
                _current.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, info: RequestInfo) -> None:
        """The access line as a standard record of `gateway.access`."""
        method = scope.get("method", "WEBSOCKET")
        path = printable_path(scope["path"])
        milliseconds = round(seconds * 1000, 1)
        operation = info.operation or "-"
        access_logger.info(
            ACCESS_FORMAT,
            method,
            path,
            status,
            milliseconds,
            operation,
            extra={
                "fields": {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": milliseconds,
                    "operation": info.operation,
                }
            },
        )
