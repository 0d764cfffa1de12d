"""Faults on demand: latency, 503 errors, garbled bodies and dropped connections.

Faults apply to RPC calls only, after authentication and the QPS check (a faulty answer still
counts as a call). Decisions draw from the Simulator's own seeded `random.Random`, one draw per
non-zero rate, in this order: drop, error, malformed. An error replaces the call (the action does
not run, as when the service is down); a drop or a garbled body happens to the answer, after the
action ran (so a submit whose answer is lost still created its job, as in real life).

How a drop looks to the caller:
- over a real socket (uvicorn): the response head announces more bytes than are sent, then the
  ASGI app raises `ConnectionDropped`; the server closes the connection, and an HTTP client sees
  the body cut short (`httpx.RemoteProtocolError`). Uvicorn logs the exception with a traceback,
  as it does for any application error; `DroppedConnectionLogFilter` on the `uvicorn.error` logger
  silences those records when drops are wanted.
- in process (`httpx.ASGITransport`, which re-raises application exceptions): the same exception
  reaches the caller, and it *is* an `httpx.RemoteProtocolError`, so a client handles it like the
  real thing, without a hang. (With `raise_app_exceptions=False` the caller gets the truncated
  body instead.)
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass
class Faults:
    """The fault knobs; changeable at run time through `PUT /_simulator/faults`."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    malformed_rate: float = 0.0
    drop_rate: float = 0.0


class Outcome(enum.Enum):
    NORMAL = "normal"
    DROP = "drop"
    ERROR = "error"
    MALFORMED = "malformed"


def choose_outcome(faults: Faults, rng: random.Random) -> Outcome:
    # A zero rate draws nothing, so enabling one fault does not shift the others' sequence.
    for rate, outcome in (
        (faults.drop_rate, Outcome.DROP),
        (faults.error_rate, Outcome.ERROR),
        (faults.malformed_rate, Outcome.MALFORMED),
    ):
        if rate > 0 and rng.random() < rate:
            return outcome
    return Outcome.NORMAL


async def add_latency(
    faults: Faults, rng: random.Random, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Wait (on `sleep`) the latency of `faults`, jitter drawn from `rng`; nothing when none."""
    delay_ms = faults.latency_ms
    if faults.latency_jitter_ms > 0:
        delay_ms += rng.uniform(-faults.latency_jitter_ms, faults.latency_jitter_ms)
    if delay_ms > 0:
        await sleep(delay_ms / 1000)


def garble(body: bytes) -> bytes:
    """A body cut in the middle: never valid JSON (nor XML), whatever it was."""
    return body[: max(1, len(body) // 2)]


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the simulator to cut a connection in the middle of a response."""

    def __init__(self) -> None:
        super().__init__("The simulator dropped the connection in the middle of the response.")


class DroppedResponse(Response):
    """Starts `response`, sends half its body, then raises `ConnectionDropped`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.body, response.status_code)
        self.raw_headers = [
            (name, value) for name, value in response.raw_headers if name != b"content-length"
        ]
        # Announce the full body and a bit more, so even an empty body is visibly cut short.
        self.raw_headers.append((b"content-length", str(len(self.body) + 16).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise ConnectionDropped()


class DroppedConnectionLogFilter(logging.Filter):
    """Drops log records about a `ConnectionDropped`: a fault asked for, not a bug to report.

    Install it on the server's error logger (`logging.getLogger("uvicorn.error")`) when serving
    with a drop rate; other records pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)
