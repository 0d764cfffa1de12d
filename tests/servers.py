"""Real servers for tests: any ASGI app on a real port, served by uvicorn in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import uvicorn
from starlette.types import ASGIApp

from gateway.mps.signing import RpcSignatureV1
from gateway.server import LingeringTransport
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    SimulatorSettings,
)
from gateway.simulator.demo import demo_job_ids


@contextmanager
def run_asgi_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    lifespan: Literal["auto", "on", "off"] = "auto",
    startup_timeout: float = 10.0,
    **options: Any,
) -> Iterator[str]:
    """Serve `app` on a free port of `host` until the block ends; yields its base URL
    (`http://127.0.0.1:<port>`). `options` go to `uvicorn.Config` (the gateway's are
    `gateway.server.server_options(settings)`).

    The server runs in a daemon thread with its own event loop, so both sync clients (the official
    SDK) and async tests can call it. Leaving the block stops the server and waits for the thread.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=0,  # the OS picks a free port; it is read back from the bound socket
        lifespan=lifespan,
        **{
            # The sans-I/O implementation: the legacy one imports deprecated websockets APIs,
            # whose warnings would fail tests.
            "ws": "websockets-sansio",
            **options,
        },
        # No dictConfig of its own: uvicorn's records go to the root logger, where pytest
        # captures them (and shows them with a failing test).
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = PromptServer(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("The test server stopped before it started listening.")
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"The test server did not start within {startup_timeout} s.")
        time.sleep(0.005)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        thread.join(timeout=startup_timeout)


#: How often a stopping `PromptServer` looks whether its connections and tasks have ended.
STOP_POLL = 0.005


class PromptServer(uvicorn.Server):
    """uvicorn's server, which stops as soon as it is told to and its connections have ended.

    uvicorn looks at `should_exit` every 0.1 s, then sleeps 0.1 s after asking its connections
    to close and looks every 0.1 s whether they have: 0.2 to 0.3 s per server stopped, for
    nothing, and the suite stops a server (or two) in most of its tests. Here `stop()` wakes the
    main loop at once, and the shutdown does what uvicorn's does (stop listening, ask every
    connection to close, wait for the connections and the tasks to end, within
    `timeout_graceful_shutdown` if set, then the lifespan's shutdown) with waits of `STOP_POLL`.

    One wait more is cut short: the gateway closes an HTTP connection lingering
    (`gateway.server.LingeringTransport`: its answer and end of file sent, it keeps reading until
    the client closes its side, or `LINGER` seconds), and a test's client idles in its pool,
    never reading, until the test ends, so every server stopped under an open client waited out
    the whole second. A stopping server closes such a connection for good at once: the answer
    went out whole before the end of file, and whatever the client sends now, nobody reads.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Tell the server to stop (from any thread); `run` returns once it has."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            # Set before the main loop reads `should_exit` (then it sees it), or after (then
            # the wake-up ends its wait): either way it stops without waiting out a tick.
            loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            # uvicorn's tick (0.1 s: its date header is refreshed every tenth), cut short by
            # `stop()`.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while self.server_state.connections or self.server_state.tasks:
                    self._end_lingering()
                    await asyncio.sleep(STOP_POLL)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        await self.lifespan.shutdown()

    def _end_lingering(self) -> None:
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if isinstance(transport, LingeringTransport) and transport.is_closing():
                transport.inner.close()  # sends what is still buffered first


@dataclass(frozen=True)
class SimulatorServer:
    url: str
    settings: SimulatorSettings

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_simulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def query_stats(self) -> dict[str, int]:
        """calls / throttled / peakWindow of QueryIProductionJob."""
        action: dict[str, int] = self.stats()["actions"]["QueryIProductionJob"]
        return action

    def reset_stats(self) -> None:
        httpx.post(f"{self.url}/_simulator/stats/reset").raise_for_status()

    def set_faults(self, **faults: float) -> None:
        httpx.put(f"{self.url}/_simulator/faults", json=faults).raise_for_status()

    def put_job(self, job_id: str, fields: dict[str, Any]) -> None:
        httpx.put(f"{self.url}/_simulator/jobs/{job_id}", json=fields).raise_for_status()

    def jobs(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = httpx.get(f"{self.url}/_simulator/jobs").json()["jobs"]
        return listing

    def demo_ids(self) -> list[str]:
        return demo_job_ids(self.settings)

    async def submit_job(self, fields: dict[str, str]) -> str:
        """The id of a job submitted to the simulator itself (SubmitIProductionJob with the
        demo keys, as a client of the cloud would), not through a gateway."""
        auth = RpcSignatureV1(SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET)
        async with httpx.AsyncClient(base_url=self.url, auth=auth) as mps:
            response = await mps.post(
                "/",
                params={
                    "Action": "SubmitIProductionJob",
                    "Version": "2014-06-18",
                    "Format": "JSON",
                },
                data=fields,
            )
        response.raise_for_status()
        job_id: str = response.json()["JobId"]
        return job_id
