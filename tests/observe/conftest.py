"""Fixtures of the observability tests: the API tests' real gateways and simulator."""

from __future__ import annotations

from tests.api.conftest import gateway, http, start_gateway

__all__ = ["gateway", "http", "start_gateway"]
