"""Admission: a GraphQL request's deadline starts when it arrives, and a request that cannot be
answered in time is refused before it costs anything.

- **Arrival.** The HTTP server stamps each request when its first byte is parsed
  (`stamp_arrival`, from `gateway.server`'s protocol); under another server, when the app first
  sees it. A request that waited for a loaded process to reach it has used its deadline waiting.
- **Deadline.** `GATEWAY_REQUEST_DEADLINE` from the arrival, or less with `x-request-timeout`
  (`request_timeout`); `deadline_of(scope)` hands it to the request's context.
- **Shedding.** `Admission` (plain ASGI middleware, on the GraphQL route) answers a request whose
  deadline passed before it could start with `DEADLINE_EXCEEDED`; one that waited longer than
  `max_wait` from its arrival to its start, or that arrives while `max_concurrent` requests run
  in this process, or as many as the `adaptive` limit learned from those waits allows, with
  `OVERLOADED` (an event stream, a subscription over SSE, runs until its answer starts): all
  retryable, with `retryAfter`, HTTP 200 like every other GraphQL error, the body unread,
  nothing parsed. The wait from arrival to start is one or two turns of the process's event
  loop: when it is long, the process is short of CPU, and every request it lets in would answer
  that much later at each of its steps.
- **Running.** A request counts as running from its admission to its answer's end, but for the
  time it waits for an identical request's answer (`running_slot(scope)`: the kept answers
  step out while they wait, and in again if they execute after all), and an event stream, once
  its answer has started: neither costs the process anything meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.adaptive_limit import AdaptiveLimit
from gateway.errors import DEFAULT_RETRY_AFTER, DeadlineExceeded, GatewayError, Overloaded
from gateway.http_errors import ErrorResponse
from gateway.middleware import first_header
from gateway.observe.requests import current_request

__all__ = [
    "TIMEOUT_HEADER",
    "Admission",
    "RequestDeadline",
    "RunningSlot",
    "deadline_of",
    "request_timeout",
    "running_slot",
    "stamp_arrival",
]

#: Header a client may send to give its request less time than the gateway's default deadline.
TIMEOUT_HEADER: Final = "x-request-timeout"
_TIMEOUT_BYTES: Final = TIMEOUT_HEADER.encode()
#: Where a request's arrival and its deadline travel in the ASGI scope (servers and apps may add
#: keys of their own).
_ARRIVED: Final = "gateway.arrived"
_DEADLINE: Final = "gateway.deadline"
_SLOT: Final = "gateway.running_slot"


@dataclass(frozen=True, slots=True)
class RequestDeadline:
    """When the request must be answered (`at`, on `time.monotonic`), and the seconds it was
    given from its arrival (`timeout`)."""

    at: float
    timeout: float


def stamp_arrival(scope: MutableMapping[str, Any], now: float) -> None:
    """Note in `scope` that its request arrived at `now` (`time.monotonic`)."""
    scope[_ARRIVED] = now


def deadline_of(scope: Scope) -> RequestDeadline | None:
    """The deadline `Admission` gave the request of `scope`, if it did."""
    deadline = scope.get(_DEADLINE)
    return deadline if isinstance(deadline, RequestDeadline) else None


class RunningSlot:
    """A request's place among those `Admission` counts as running: `leave` while it costs the
    process nothing (it waits for another request's answer), `enter` again if it goes on to run
    (already admitted: never refused). Both are idempotent."""

    __slots__ = ("_admission", "held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.held = True

    def leave(self) -> None:
        if self.held:
            self.held = False
            self._admission.running -= 1

    def enter(self) -> None:
        if not self.held:
            self.held = True
            self._admission.running += 1


def running_slot(scope: Scope) -> RunningSlot | None:
    """The running slot `Admission` gave the request of `scope`, if it counts requests."""
    slot = scope.get(_SLOT)
    return slot if isinstance(slot, RunningSlot) else None


def request_timeout(default: float, asked: str | bytes | None) -> float:
    """The seconds a request may take: `default`, or less when its `x-request-timeout` (`asked`)
    says so. An unreadable header is ignored rather than failing the request."""
    if asked:
        with contextlib.suppress(ValueError):
            return min(default, max(0.0, float(asked)))
    return default


class Admission:
    """See the module docstring. Requests of `path` only (the GraphQL route over HTTP; a
    WebSocket's operations each get their deadline when they start). `max_wait` None lets a
    request wait any time short of its deadline, `max_concurrent` and `adaptive` None any
    number run. `shed` is
    told of each refusal: `deadline` or `overloaded`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_timeout: float,
        max_wait: float | None = None,
        max_concurrent: int | None = None,
        adaptive: AdaptiveLimit | None = None,
        path: str = "/graphql",
        shed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.default_timeout = default_timeout
        self.max_wait = max_wait
        self.max_concurrent = max_concurrent
        self.adaptive = adaptive
        self.path = path
        self.shed = shed
        self.clock = clock
        #: Requests of `path` running now in this process.
        self.running = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        now = self.clock()
        arrived = scope.get(_ARRIVED)
        if not isinstance(arrived, float):
            arrived = now
        timeout = request_timeout(self.default_timeout, first_header(scope, _TIMEOUT_BYTES))
        deadline = RequestDeadline(arrived + timeout, timeout)
        if now >= deadline.at:
            refusal: GatewayError = DeadlineExceeded(
                "the request waited to be served", timeout=timeout, retry_after=DEFAULT_RETRY_AFTER
            )
            await self._refuse("deadline", refusal, scope, receive, send)
            return
        waited = now - arrived
        if self.adaptive is not None:
            self.adaptive.observe(waited, self.running, now)
        if (
            (self.max_wait is not None and waited > self.max_wait)
            or (self.max_concurrent is not None and self.running >= self.max_concurrent)
            or (self.adaptive is not None and not self.adaptive.admits(self.running))
        ):
            await self._refuse("overloaded", Overloaded(DEFAULT_RETRY_AFTER), scope, receive, send)
            return
        scope[_DEADLINE] = deadline
        if self.max_concurrent is None and self.adaptive is None:
            await self.app(scope, receive, send)
            return
        self.running += 1
        slot = RunningSlot(self)
        scope[_SLOT] = slot
        streaming = False

        async def send_releasing_streams(message: Message) -> None:
            nonlocal streaming
            # A subscription answered as an event stream lasts as long as its client listens:
            # it stops counting as running once its answer has started.
            if not streaming and message["type"] == "http.response.start" and _streams(message):
                streaming = True
                slot.leave()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing_streams)
        finally:
            slot.leave()

    async def _refuse(
        self, reason: str, error: GatewayError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if self.shed is not None:
            self.shed(reason)
        info = current_request()
        if info is not None:
            info.counted = True
        response = ErrorResponse(200, error.message, error.code, **error.context())
        await response(scope, receive, send)


def _streams(start: Message) -> bool:
    """Whether an `http.response.start` begins an event stream."""
    return any(
        name == b"content-type" and bytes(value).startswith(b"text/event-stream")
        for name, value in start.get("headers", ())
    )
