"""Tests that drive frontend clients from npm (see `tests/support/node.py`) against a gateway."""

from tests.api.conftest import gateway, start_gateway

__all__ = ["gateway", "start_gateway"]
