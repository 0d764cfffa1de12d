"""`upstream_transport` and its `LeanConnectionPool`, against a real HTTP server on 127.0.0.1.

The server counts the connections it sees (a client port each) and how many requests it holds
at once; each request waits at a gate until the test has sent them all, so that a burst really
is in flight together, as the budget's grants are.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from gateway.mps.pool import LeanConnectionPool, upstream_transport
from tests.servers import run_asgi_server
from tests.support.waiting import eventually


class CountingServer:
    """An ASGI app that answers "ok" once `open_gate` was called (or at once when ungated),
    and records each request's client port and the most requests it held together."""

    def __init__(self, gated: bool = True) -> None:
        self.ports: list[int] = []
        self.holding = 0
        self.most_held = 0
        self._gate = threading.Event()
        if not gated:
            self._gate.set()

    def open_gate(self) -> None:
        self._gate.set()

    def close_gate(self) -> None:
        self._gate.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.ports.append(scope["client"][1])
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        # The gate is opened from the test's thread (the server runs a loop of its own).
        await asyncio.to_thread(self._gate.wait)
        self.holding -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def counting(pool: httpcore.AsyncConnectionPool) -> list[int]:
    """Counts `pool`'s assignment passes (one list item each)."""
    passes: list[int] = []
    assign = pool._assign_requests_to_connections

    def counted() -> list[httpcore.AsyncConnectionInterface]:
        passes.append(1)
        return assign()

    pool._assign_requests_to_connections = counted  # type: ignore[method-assign]
    return passes


@pytest.fixture
def server() -> Iterator[tuple[CountingServer, str]]:
    app = CountingServer()
    with run_asgi_server(app) as url:
        yield app, url


async def burst(client: httpx.AsyncClient, url: str, app: CountingServer, calls: int) -> None:
    """`calls` requests at once, held by the server until all have reached it."""
    app.close_gate()
    sent = [asyncio.ensure_future(client.get(url)) for _ in range(calls)]
    await eventually(
        lambda: app.holding == calls,
        "the burst reaching the server",
    )
    app.open_gate()
    responses = await asyncio.gather(*sent)
    assert [response.text for response in responses] == ["ok"] * calls


async def test_a_burst_costs_two_assignment_passes_per_call_and_one_connection_each(
    server: tuple[CountingServer, str],
) -> None:
    app, url = server
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    transport = upstream_transport(limits)
    assert isinstance(transport._pool, LeanConnectionPool)
    async with httpx.AsyncClient(transport=transport) as client:
        await burst(client, url, app, 16)  # opens the connections
        passes = counting(transport._pool)
        await burst(client, url, app, 16)  # on warm connections, as the budget's bursts go
    # One pass when a call starts, one when its response is closed: never a retry.
    assert len(passes) == 2 * 16
    assert len(set(app.ports)) == 16
    assert app.most_held == 16


async def test_httpcore_s_own_pool_still_retries_a_burst_on_one_connection(
    server: tuple[CountingServer, str],
) -> None:
    # Why the lean pool exists: if this starts failing, httpcore fixed its assignment and
    # `gateway/mps/pool.py` can go.
    app, url = server
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=16))
    async with httpx.AsyncClient(transport=transport) as client:
        await burst(client, url, app, 16)
        passes = counting(transport._pool)
        await burst(client, url, app, 16)
    # Every call of the burst is handed the first idle connection, and all but one retry.
    assert len(passes) > 4 * 16


async def test_more_calls_than_connections_wait_for_one_and_reuse_it(
    server: tuple[CountingServer, str],
) -> None:
    app, url = server
    app.open_gate()
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with httpx.AsyncClient(transport=upstream_transport(limits)) as client:
        responses = await asyncio.gather(*(client.get(url) for _ in range(40)))
        # Later calls go on the warm connections.
        again = await asyncio.gather(*(client.get(url) for _ in range(4)))
    assert [response.text for response in [*responses, *again]] == ["ok"] * 44
    assert len(set(app.ports)) <= 4


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_reused() -> None:
    app = CountingServer(gated=False)
    # The server closes an idle connection after a second.
    with run_asgi_server(app, timeout_keep_alive=1) as url:
        transport = upstream_transport(httpx.Limits(max_connections=2))
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(url)).text == "ok"
            [connection] = transport._pool.connections
            await eventually(connection.has_expired, "the server closing the idle connection")
            assert (await client.get(url)).text == "ok"
            assert connection not in transport._pool.connections
    assert len(set(app.ports)) == 2


async def test_idle_connections_beyond_the_keep_alive_limit_are_closed(
    server: tuple[CountingServer, str],
) -> None:
    app, url = server
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=2)
    transport = upstream_transport(limits)
    async with httpx.AsyncClient(transport=transport) as client:
        await burst(client, url, app, 8)
        assert len(transport._pool.connections) == 2
