"""Real gateways for GraphiQL's tests: on the embedded simulator (the default upstream, whatever
the environment holds) unless told otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.app import create_app
from gateway.server import server_options
from tests.api.conftest import embedded_settings
from tests.servers import run_asgi_server


@contextmanager
def serve_gateway(**overrides: Any) -> Iterator[str]:
    """Serves a gateway (as `python -m gateway serve` does) until the block ends; yields its
    base URL."""
    settings = embedded_settings(**overrides)
    with run_asgi_server(create_app(settings), lifespan="on", **server_options(settings)) as url:
        yield url


@pytest.fixture
def embedded_gateway() -> Iterator[str]:
    """The base URL of a real gateway on the embedded simulator."""
    with serve_gateway() as url:
        yield url
