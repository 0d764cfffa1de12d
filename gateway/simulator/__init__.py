"""A faithful stand-in for the MPS smart-production job API (QueryIProductionJob,
SubmitIProductionJob, version 2014-06-18): signatures V1 and V3, per-action QPS limit, real error
shapes, JSON and XML, a seeded demo job set, demo jobs that move, jobs that run, and faults on
demand.

The gateway runs on it by default (in process, through `httpx.ASGITransport`); docker-compose,
tests and benchmarks run it on a real port.
"""

from __future__ import annotations

from gateway.simulator.app import create_simulator_app
from gateway.simulator.cycles import moving_demo_job_id
from gateway.simulator.demo import DOC_EXAMPLE_JOB_ID, demo_job_ids
from gateway.simulator.faults import ConnectionDropped, DroppedConnectionLogFilter
from gateway.simulator.state import Simulator

#: Seconds the simulator's server keeps an idle connection open: longer than the gateway keeps
#: one for reuse (30 s, `gateway.upstream.UPSTREAM_KEEPALIVE`), as a cloud's front ends do, so a
#: connection the gateway reuses is never one the server is closing at that moment (uvicorn's
#: default, 5 s, made a call on a connection idle for 5 s race its close).
SIMULATOR_KEEP_ALIVE = 65

__all__ = [
    "DOC_EXAMPLE_JOB_ID",
    "SIMULATOR_KEEP_ALIVE",
    "ConnectionDropped",
    "DroppedConnectionLogFilter",
    "Simulator",
    "create_simulator_app",
    "demo_job_ids",
    "moving_demo_job_id",
]
