"""Fixtures every test folder may use: a real MPS simulator on a real port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.settings import SimulatorSettings
from gateway.simulator import create_simulator_app
from tests.servers import SimulatorServer, run_asgi_server


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(qps=100)


@pytest.fixture
def simulator(simulator_settings: SimulatorSettings) -> Iterator[SimulatorServer]:
    with run_asgi_server(create_simulator_app(simulator_settings)) as url:
        yield SimulatorServer(url=url, settings=simulator_settings)
