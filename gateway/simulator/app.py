"""`create_simulator_app(settings)`: the simulated MPS API as a Starlette app.

It runs the same under uvicorn on a real port and in process through `httpx.ASGITransport`: it
needs no lifespan and starts no background task (submitted jobs age lazily, from the clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.routing import Route

from gateway.settings import SimulatorSettings
from gateway.simulator.admin import admin_routes
from gateway.simulator.rpc import rpc_endpoint
from gateway.simulator.state import Simulator

#: Every method is routed to the RPC endpoint so that it can answer the upstream's own
#: `UnsupportedHTTPMethod` rather than a bare 405.
_RPC_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def create_simulator_app(
    settings: SimulatorSettings,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Starlette:
    """A new simulator with its own state (`app.state.simulator`, a `Simulator`).

    `clock` returns wall-clock Unix seconds; request timestamps are checked against it, QPS windows
    and job lifecycles are measured by it. `sleep` waits out the latency fault. Tests pass a clock
    they move by hand, and a sleep that records what it was asked to wait.
    """
    app = Starlette(routes=[Route("/", rpc_endpoint, methods=_RPC_METHODS), *admin_routes()])
    app.state.simulator = Simulator(settings, clock=clock, sleep=sleep)
    return app
