"""A closed-loop HTTP/1.1 load generator: C keep-alive connections, one request in flight each.

Written on bare `asyncio.Protocol` (on uvloop when installed) rather than httpx, because it must
be far faster than the servers it measures: httpx spends tens of microseconds of Python per
request, about as much as a small GraphQL server, and both figures would then measure the client.
This one costs a few microseconds per request; `cpu_per_request` in its result says how many,
and `bench.trivial_server` gives its ceiling against a server that does nothing.

Every response is checked: status 200 and a body byte-for-byte equal to the expected one (the
caller validates that body once, as JSON). Anything else is a failure, counted by reason.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

T = TypeVar("T")


def add_closed_loop_options(parser: argparse.ArgumentParser, *, each: str) -> None:
    """The options of a closed-loop benchmark: `--connections`, `--rounds`, `--seconds` (measured
    per `each`, e.g. "server") and `--warmup`."""
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help=f"measured time per {each}")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load before each")


def post_request(
    host: str, port: int, path: str, body: bytes, headers: Mapping[str, str] | None = None
) -> bytes:
    """The bytes of one keep-alive POST of a JSON body: sent as they are, again and again.
    `headers` are added as they are (e.g. `{"x-request-timeout": "1"}`)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "content-type: application/json\r\n"
        "accept: application/json\r\n"
        f"{extra}"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def get_request(host: str, port: int, path: str, params: Mapping[str, str]) -> bytes:
    """The bytes of one keep-alive GET of a GraphQL query in its query string."""
    head = (
        f"GET {path}?{urlencode(params)} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "accept: application/json\r\n"
        "\r\n"
    )
    return head.encode("ascii")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when it is installed (the servers use it too), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


@dataclass(slots=True)
class _Tally:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    recording: bool = False
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one measured period gave."""

    #: Responses that passed the check within the measured period.
    requests: int
    seconds: float
    #: Failures over the whole run, warm-up included, by reason; any failure voids the run.
    failures: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    #: CPU seconds this process spent per checked response in the measured period.
    cpu_per_request: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def _response_bounds(buffer: bytearray) -> tuple[bytes, int, int] | None:
    """Where the first whole response in `buffer` lies: (status code, body start, end), or None
    while it is incomplete. ValueError for a response without content-length (chunked or
    close-delimited: neither server sends that for a JSON answer)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    # Header names are case-insensitive; uvicorn writes them in lower case already.
    head = bytes(buffer[:end]).lower()
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("response without content-length")
    stop = head.find(b"\r\n", start + 2)
    length = int(head[start + 17 : stop if stop >= 0 else len(head)])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return head[9:12], end + 4, total


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends the next request as soon as a response is read."""

    def __init__(
        self, request: bytes, expected_body: bytes, tally: _Tally, closed: asyncio.Future[None]
    ) -> None:
        self._request = request
        self._expected = expected_body
        self._tally = tally
        self._closed = closed
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._sent_at = 0.0
        self.stopping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            bounds = _response_bounds(buffer)
        except ValueError as exc:
            self._fail(str(exc))
            return
        if bounds is None:
            return
        status, body_start, total = bounds
        good = status == b"200" and buffer[body_start:total] == self._expected
        del buffer[:total]
        tally = self._tally
        if good:
            tally.ok += 1
            if tally.recording:
                tally.latencies.append(time.perf_counter() - self._sent_at)
        else:
            reason = "unexpected body" if status == b"200" else "HTTP " + status.decode()
            tally.failures[reason] += 1
        if self.stopping:
            self._close()
        else:
            self._send()

    def _fail(self, reason: str) -> None:
        self._tally.failures[reason] += 1
        self._close()

    def _close(self) -> None:
        self.stopping = True
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping:
            self._tally.failures["connection lost"] += 1
        if not self._closed.done():
            self._closed.set_result(None)


async def closed_loop(
    host: str,
    port: int,
    request: bytes,
    expected_body: bytes,
    *,
    connections: int,
    warmup: float,
    duration: float,
    cpu_clock: Callable[[], float] = time.process_time,
) -> LoadResult:
    """Keep `connections` connections busy for `warmup + duration` seconds; measure the last
    `duration`. Ends by letting every connection finish its request in flight."""
    loop = asyncio.get_running_loop()
    tally = _Tally()
    clients: list[_Connection] = []
    closed: list[asyncio.Future[None]] = []
    try:
        for _ in range(connections):
            done: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(
                functools.partial(_Connection, request, expected_body, tally, done), host, port
            )
            clients.append(client)
            closed.append(done)
        await asyncio.sleep(warmup)
        tally.recording = True
        ok_before, cpu_before, started = tally.ok, cpu_clock(), time.perf_counter()
        await asyncio.sleep(duration)
        ok_after, cpu_after, ended = tally.ok, cpu_clock(), time.perf_counter()
        tally.recording = False
    finally:
        for client in clients:
            client.stopping = True
        if closed:
            await asyncio.wait(closed, timeout=10.0)
    requests = ok_after - ok_before
    latencies = sorted(tally.latencies)
    return LoadResult(
        requests=requests,
        seconds=ended - started,
        failures=dict(tally.failures),
        latency_p50_ms=1000 * statistics.median(latencies) if latencies else 0.0,
        latency_p99_ms=1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
        cpu_per_request=(cpu_after - cpu_before) / requests if requests else 0.0,
    )


class Exchange(asyncio.Protocol):
    """One keep-alive connection on which a caller sends a request and awaits its response, one
    at a time: for load whose answers differ from request to request (a snapshot's age, its
    fetch time), which `closed_loop`'s byte-for-byte check cannot take, and whose pace the
    caller sets (open to a schedule rather than closed-loop). It parses no more than
    `closed_loop` does, so it stays far cheaper per request than httpx; the caller checks the
    body.

        exchange = await Exchange.open(host, port)
        status, body = await exchange.send(post_request(host, port, "/graphql", payload))
        exchange.close()
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiting: asyncio.Future[tuple[int, bytes]] | None = None
        self._closing = False

    @classmethod
    async def open(cls, host: str, port: int) -> Exchange:
        loop = asyncio.get_running_loop()
        _, exchange = await loop.create_connection(cls, host, port)
        return exchange

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write `request` and wait for its response: (HTTP status, body). Raises
        ConnectionError if the connection ends first, and ValueError for an unreadable response
        (the connection is then closed: what follows on it could not be framed)."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the connection is closed")
        if self._waiting is not None:
            raise RuntimeError("Exchange.send: one request at a time on a connection")
        waiting: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting = waiting
        self._transport.write(request)
        try:
            return await waiting
        finally:
            self._waiting = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            bounds = _response_bounds(buffer)
        except ValueError as exc:
            self._resolve(exc)
            self.close()
            return
        if bounds is None:
            return
        status, body_start, total = bounds
        body = bytes(buffer[body_start:total])
        del buffer[:total]
        try:
            self._resolve((int(status), body))
        except ValueError:
            self._resolve(ValueError(f"unreadable status line {status!r}"))

    def _resolve(self, outcome: tuple[int, bytes] | Exception) -> None:
        waiting = self._waiting
        if waiting is None or waiting.done():
            return  # nothing asked (a stray response): the next send() is not confused by it
        if isinstance(outcome, Exception):
            waiting.set_exception(outcome)
        else:
            waiting.set_result(outcome)

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing or self._waiting is not None:
            self._resolve(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))
