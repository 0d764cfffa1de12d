from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.mps.signing import RpcSignatureV1
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    SimulatorSettings,
)
from gateway.simulator import Simulator, create_simulator_app

AK = SIMULATOR_DEMO_ACCESS_KEY_ID
SECRET = SIMULATOR_DEMO_ACCESS_KEY_SECRET
VERSION = "2014-06-18"
#: 2025-01-01T00:00:00Z: where manual clocks start.
EPOCH = 1_735_689_600.0


class ManualClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def query_params(job_id: str, **extra: str) -> dict[str, str]:
    return {
        "Action": "QueryIProductionJob",
        "Version": VERSION,
        "Format": "JSON",
        "JobId": job_id,
        **extra,
    }


def submit_params(function_name: str, **extra: str) -> dict[str, str]:
    params = {"Action": "SubmitIProductionJob", "Version": VERSION, "Format": "JSON"}
    if function_name:
        params["FunctionName"] = function_name
    return {**params, **extra}


def simulator_of(app: Starlette) -> Simulator:
    simulator: Simulator = app.state.simulator
    return simulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_app(clock: ManualClock) -> Callable[..., Starlette]:
    """Builds a simulator on the manual clock; keyword arguments override settings."""

    def make(**overrides: Any) -> Starlette:
        return create_simulator_app(SimulatorSettings(**overrides), clock=clock)

    return make


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app()


@pytest.fixture
async def client(app: Starlette, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client that signs with V1, its timestamps read from the manual clock."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, SECRET, clock=clock),
    ) as client:
        yield client
