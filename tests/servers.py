"""Real servers for tests: any ASGI app on a real port, served by uvicorn in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import uvicorn
from starlette.types import ASGIApp

from gateway.mps.signing import RpcSignatureV1
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
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("The test server stopped before it started listening.")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"The test server did not start within {startup_timeout} s.")
        time.sleep(0.005)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)


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
