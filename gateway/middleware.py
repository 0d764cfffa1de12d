"""Plain ASGI middleware of the gateway."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_errors import REQUEST_TIMEOUT, REQUEST_TOO_LARGE, ErrorResponse

logger = logging.getLogger(__name__)


class BodySizeLimit:
    """Refuses HTTP request bodies over `max_bytes` with 413 before the app reads them whole.

    GraphQL variables can carry any number of ids; this bounds the memory and parsing a single
    request may cost, before TOO_MANY_IDS can even be checked.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = first_header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            # The HTTP server delivers exactly the declared length: nothing more to watch.
            await self.app(scope, receive, send)
            return
        # A chunked body announces no length: count it as it arrives.
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = ErrorResponse(
            413,
            f"Request bodies are limited to {self.max_bytes} bytes.",
            REQUEST_TOO_LARGE,
            limit=self.max_bytes,
        )
        await refusal(scope, receive, send)


class BodyReadTimeout:
    """Gives a request `timeout` seconds, from the end of its headers, to deliver its whole body.

    A client that sends its body slowly, or stops halfway (slowloris), holds a connection and a
    task for as long as it likes otherwise. When the time is up while the app waits for the
    body, the request is answered 408 with `connection: close` (unless an answer has started)
    and the connection closes. Only waiting for the body is timed: an app that never reads it,
    or waits for the client to disconnect after it, is not affected.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_complete = False
        response_started = False

        async def timed_receive() -> Message:
            # A timer that cancels this task if the body is still awaited at the deadline:
            # asyncio.timeout_at does the same, but its bookkeeping measured about 15 us per
            # use, a large share of a kept answer's whole cost; the body is usually there
            # already, and the timer is cancelled before it could run.
            nonlocal body_complete
            if body_complete:
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            expired = False

            def expire() -> None:
                nonlocal expired
                expired = True
                task.cancel()

            timer = loop.call_at(deadline, expire)
            try:
                message = await receive()
            except asyncio.CancelledError:
                # Our cancellation, and no other pending: the deadline passed.
                if expired and task.uncancel() == 0:
                    raise _BodyTimedOut from None
                raise
            finally:
                timer.cancel()
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _BodyTimedOut:
            logger.debug("Request body not received within %s s: answered 408", self.timeout)
            if not response_started:
                refusal = ErrorResponse(
                    408,
                    f"Expected the whole request body within {self.timeout:g} s of its headers, "
                    "received only part of it in that time.",
                    REQUEST_TIMEOUT,
                    headers={"connection": "close"},
                    limit=self.timeout,
                )
                await refusal(scope, receive, send)


def first_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class _BodyTooLarge(Exception):
    pass


class _BodyTimedOut(Exception):
    pass
