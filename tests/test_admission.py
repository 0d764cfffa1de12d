"""`Admission` as plain ASGI, on a clock moved by hand: which requests run, which are shed and
why, and the deadline each one that runs is given."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.admission import Admission, RequestDeadline, deadline_of, stamp_arrival
from tests.support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class App:
    """The app behind admission: records the scopes it ran, and holds each request until
    `release` is set when `hold` is."""

    def __init__(self, *, hold: bool = False) -> None:
        self.ran: list[Scope] = []
        self.release = asyncio.Event()
        self.hold = hold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ran.append(scope)
        if self.hold:
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def http_scope(path: str = "/graphql", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()
        ],
    }


async def call(admission: Admission, scope: dict[str, Any]) -> tuple[int, Any]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await admission(scope, receive, send)
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], json.loads(body)


def admission(app: App, clock: Clock, shed: list[str], **options: Any) -> Admission:
    return Admission(app, default_timeout=2.0, clock=clock, shed=shed.append, **options)


async def test_a_request_runs_with_its_deadline_counted_from_its_arrival() -> None:
    clock, app, shed = Clock(), App(), list[str]()
    scope = http_scope()
    stamp_arrival(scope, clock.now - 1.5)  # it waited 1.5 s for the process to reach it

    assert await call(admission(app, clock, shed), scope) == (200, {})
    assert [deadline_of(ran) for ran in app.ran] == [RequestDeadline(at=500.5, timeout=2.0)]
    assert shed == []


async def test_a_request_whose_deadline_passed_before_it_ran_is_shed_unrun() -> None:
    clock, app, shed = Clock(), App(), list[str]()
    scope = http_scope()
    stamp_arrival(scope, clock.now - 2.0)

    status, body = await call(admission(app, clock, shed), scope)

    assert status == 200
    assert body == {
        "errors": [
            {
                "message": "The request's deadline of 2 s passed while the request waited to be "
                "served; retry in 1.00 s.",
                "extensions": {"code": "DEADLINE_EXCEEDED", "retryAfter": 1.0},
            }
        ]
    }
    assert app.ran == []
    assert shed == ["deadline"]


async def test_the_clients_timeout_header_shortens_the_deadline_and_garbage_in_it_does_not() -> (
    None
):
    clock, app, shed = Clock(), App(), list[str]()
    gate = admission(app, clock, shed)
    shorter = http_scope(x_request_timeout="0.5")
    stamp_arrival(shorter, clock.now - 0.6)
    garbage = http_scope(x_request_timeout="soon")
    stamp_arrival(garbage, clock.now - 0.6)
    longer = http_scope(x_request_timeout="60")
    stamp_arrival(longer, clock.now - 2.5)

    codes = []
    for scope in (shorter, garbage, longer):
        _, body = await call(gate, scope)
        codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else None)

    assert codes == ["DEADLINE_EXCEEDED", None, "DEADLINE_EXCEEDED"]
    assert [deadline_of(ran) for ran in app.ran] == [RequestDeadline(at=501.4, timeout=2.0)]


async def test_without_a_stamp_the_deadline_starts_when_admission_sees_it() -> None:
    clock, app, shed = Clock(), App(), list[str]()
    await call(admission(app, clock, shed), http_scope())
    assert [deadline_of(ran) for ran in app.ran] == [RequestDeadline(at=502.0, timeout=2.0)]


async def test_beyond_the_concurrency_limit_a_request_is_refused_at_once() -> None:
    clock, app, shed = Clock(), App(hold=True), list[str]()
    gate = admission(app, clock, shed, max_concurrent=2)

    held = [asyncio.ensure_future(call(gate, http_scope())) for _ in range(2)]
    await eventually(lambda: len(app.ran) == 2, "two requests running")
    status, body = await call(gate, http_scope())
    assert (status, body["errors"][0]["extensions"]) == (
        200,
        {"code": "OVERLOADED", "retryAfter": 1.0},
    )
    assert shed == ["overloaded"]
    assert gate.running == 2

    app.release.set()
    assert [await request for request in held] == [(200, {}), (200, {})]
    assert gate.running == 0
    assert await call(gate, http_scope()) == (200, {})  # room again
    assert (len(app.ran), shed) == (3, ["overloaded"])


async def test_other_paths_and_websockets_pass_through_whatever_their_age() -> None:
    clock, app, shed = Clock(), App(), list[str]()
    gate = admission(app, clock, shed, max_concurrent=1)
    health = http_scope("/healthz")
    stamp_arrival(health, clock.now - 100.0)
    assert await call(gate, health) == (200, {})

    socket: dict[str, Any] = {"type": "websocket", "path": "/graphql", "headers": []}
    stamp_arrival(socket, clock.now - 100.0)
    await gate(socket, _never_receive, _ignore_send)
    assert [scope["path"] for scope in app.ran] == ["/healthz", "/graphql"]
    assert shed == []


async def _never_receive() -> Message:
    raise AssertionError("nothing reads")


async def _ignore_send(message: Message) -> None:
    pass


async def test_a_request_that_waited_too_long_to_start_is_refused_as_overloaded() -> None:
    clock, app, shed = Clock(), App(), list[str]()
    gate = admission(app, clock, shed, max_wait=0.25)
    waited = {0.2: http_scope(), 0.3: http_scope(), 1.9: http_scope()}
    for seconds, scope in waited.items():
        stamp_arrival(scope, clock.now - seconds)

    codes = []
    for scope in waited.values():
        _, body = await call(gate, scope)
        codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else None)

    assert codes == [None, "OVERLOADED", "OVERLOADED"]
    assert [deadline_of(ran) for ran in app.ran] == [RequestDeadline(at=501.8, timeout=2.0)]
    assert shed == ["overloaded", "overloaded"]


async def test_an_event_stream_stops_counting_as_running_once_it_has_started() -> None:
    clock, shed = Clock(), list[str]()
    streaming = asyncio.Event()
    finish = asyncio.Event()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        streaming.set()
        await finish.wait()
        await send({"type": "http.response.body", "body": b""})

    gate = Admission(stream, default_timeout=2.0, clock=clock, shed=shed.append, max_concurrent=1)
    subscription = asyncio.ensure_future(gate(http_scope(), _never_receive, _ignore_send))
    await streaming.wait()
    assert gate.running == 0
    finish.set()
    await subscription
    assert (gate.running, shed) == (0, [])
