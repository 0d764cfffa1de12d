"""How `python -m gateway serve` runs the app: uvicorn, with a bound on what each client
connection may cost.

uvicorn closes a keep-alive connection left idle after a response, but it waits for ever for a
connection's first byte and for a request's headers, and it accepts any number of connections.
`LimitedHttpProtocol` adds both timers and a cap on connections. The request body's timeout is
ASGI middleware (`gateway.middleware.BodyReadTimeout`), so it holds under any server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.admission import stamp_arrival
from gateway.api.sse import ABORT_EXTENSION
from gateway.observe.logs import LogLimiter
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

#: Seconds between two warnings that connections are being refused at the cap.
REFUSAL_WARNING_INTERVAL = 60.0


def server_options(settings: GatewaySettings) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.run` (or `uvicorn.Config`) serving the gateway."""
    return {
        "http": limited_http_protocol(settings),
        # websockets-sansio: the websockets implementation without the library's deprecated API.
        "ws": "websockets-sansio",
        # A WebSocket frame is bounded like an HTTP body (uvicorn's default is 16 MiB).
        "ws_max_size": settings.max_body_bytes,
        # uvicorn's own timer after each response; ours (the same, to the millisecond) fires
        # first, this one is rounded up because uvicorn takes whole seconds.
        "timeout_keep_alive": math.ceil(settings.idle_timeout),
    }


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may cost: time idle, time to send headers, and how many
    connections the process holds."""

    idle_timeout: float
    header_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        return cls(settings.idle_timeout, settings.header_timeout, settings.max_connections)


def limited_http_protocol(settings: GatewaySettings) -> type[LimitedHttpProtocol]:
    """`LimitedHttpProtocol` with the limits of `settings` (uvicorn builds one per connection
    from the class it is given, so the limits travel as class attributes)."""

    class Limited(LimitedHttpProtocol):
        limits = ConnectionLimits.from_settings(settings)
        refusals = Refusals()

    return Limited


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), with its connection's cost bounded and each
    request's arrival stamped:

    - idle: a connection that sends nothing for `idle_timeout` (before its first request,
      between requests, or trickling the leftovers of a request already answered) is closed;
    - headers: a request whose headers are not complete `header_timeout` after its first byte
      is dropped with its connection (slowloris);
    - arrival: each request is stamped when its first byte is parsed: its deadline starts there
      (`gateway.admission`);
    - cap: a connection accepted while the process holds `max_connections` (HTTP and WebSocket
      alike) is closed at once, before a byte of it is read. Closing is the cheapest refusal
      there is: a 503 would need the request read first, and the flood that fills the cap is
      usually of clients that send nothing. A load balancer retries such a connection elsewhere.

    The timers never run while a request is being answered: the app's own deadlines bound that.
    """

    limits: ClassVar[ConnectionLimits]
    refusals: ClassVar[Refusals]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._reading_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.refusals.count(self.loop.time(), self.limits.max_connections)
            transport.close()
            return
        self.transport = LingeringTransport(transport, self.loop)
        self._expire_in(self.limits.idle_timeout)

    def handle_websocket_upgrade(self) -> None:
        # A WebSocket closes with its own handshake: it gets the plain transport.
        if isinstance(self.transport, LingeringTransport):
            self.transport = self.transport.inner
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The request's deadline starts now, at its first byte: the time a loaded process
        # takes to reach its app counts against it (`gateway.admission`).
        stamp_arrival(cast(MutableMapping[str, Any], self.scope), time.monotonic())
        self._reading_headers = True
        self._expire_in(self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        # The request is the app's now (or the WebSocket protocol's, which takes the transport
        # over): no timer of ours may close it.
        self._reading_headers = False
        self._cancel_timer()
        # How the app drops this connection at once (an event stream whose client reads
        # nothing: `gateway.api.sse`); ASGI itself has no way to.
        extensions = cast(dict[str, object], self.scope.setdefault("extensions", {}))
        extensions[ABORT_EXTENSION] = self.transport.abort
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle only if no pipelined request started and no new one is arriving.
        if not self._reading_headers and self.cycle.response_complete:
            self._expire_in(self.limits.idle_timeout)

    def _expire_in(self, seconds: float) -> None:
        self._cancel_timer()
        if not self.transport.is_closing():
            self._timer = self.loop.call_later(seconds, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        logger.debug(
            "Closing a client connection %s",
            "whose request headers did not arrive in time" if self._reading_headers else "idle",
        )
        self.transport.close()


class LingeringTransport(asyncio.Transport):
    """A connection's transport whose `close()` is a lingering close, as HTTP servers do it.

    Closing a socket whose peer is still sending (the rest of a body after a 408 or a 413, say)
    makes the kernel answer the next bytes with a reset, and a reset can destroy the answer the
    peer has not read yet. So `close()` first ends the sending side (the peer reads the answer,
    then end of file), keeps receiving (and the protocol discards what arrives), and closes for
    good when the peer closes its side, or `LINGER` seconds later at most.
    """

    #: Most seconds a closed connection keeps receiving before it is closed for good.
    LINGER = 1.0

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner.get_extra_info("extra"))
        self._inner = inner
        self._loop = loop
        self._closing = False

    @property
    def inner(self) -> asyncio.Transport:
        """The transport this one closes with lingering."""
        return self._inner

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        inner = self._inner
        if inner.is_closing() or not inner.can_write_eof():
            inner.close()
            return
        inner.write_eof()  # the answer goes out whole, then end of file
        self._loop.call_later(self.LINGER, inner.close)

    def is_closing(self) -> bool:
        return self._closing or self._inner.is_closing()

    def abort(self) -> None:
        self._closing = True
        self._inner.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._inner.writelines(list_of_data)

    def write_eof(self) -> None:
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)


class Refusals:
    """Counts connections refused at the cap, and says so in a warning at most once a
    `REFUSAL_WARNING_INTERVAL`: a flood of connections must not become a flood of log lines."""

    def __init__(self) -> None:
        self._limiter = LogLimiter(interval=REFUSAL_WARNING_INTERVAL)

    def count(self, now: float, cap: int) -> None:
        refused = self._limiter.happened("refused", now=now)
        if refused is not None:
            logger.warning(
                "Refusing client connections: this process holds GATEWAY_MAX_CONNECTIONS (%d) "
                "already (%d refused since the last such warning)",
                cap,
                refused,
            )
