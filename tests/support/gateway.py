"""`python -m gateway serve` as a child process on a free port: what an operator runs."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Final

import httpx

from tests.support.ports import HOST
from tests.support.processes import ServerProcess

__all__ = ["ADMIN_HEADERS", "ADMIN_TOKEN", "GatewayProcess", "gateway_environment"]

#: The GATEWAY_ADMIN_TOKEN of the tests' gateways (processes and in-process servers alike), so
#: that a test can read /readyz's detailed report; `ADMIN_HEADERS` send it. A test value, no secret.
ADMIN_TOKEN: Final = "test-admin-token-not-a-secret"
ADMIN_HEADERS: Final = {"authorization": f"Bearer {ADMIN_TOKEN}"}

#: Variables that would change what a gateway does (credentials, endpoint, limits, faults).
_SCRUBBED_PREFIXES: Final = ("ALIBABA_CLOUD_", "GATEWAY_", "SIMULATOR_")


#: A test's gateway sheds nothing for being slow to start a request: on a busy machine the wait
#: is the machine's, and a test is about something else (the admission tests set their own).
UNSHED: Final = {"GATEWAY_ADMISSION_MAX_WAIT": "0", "GATEWAY_ADMISSION_TARGET_WAIT": "0"}


def gateway_environment(variables: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the gateway's, the simulator's and the cloud's
    variables, plus `variables`: a child sees only the settings a test gives it."""
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith(_SCRUBBED_PREFIXES)
    }
    return {**inherited, **UNSHED, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **(variables or {})}


class GatewayProcess(ServerProcess):
    """A gateway child process (`python -m gateway serve --port <port>`) with the settings of
    `variables` (see `gateway_environment`); started when `/healthz` answers 200."""

    def __init__(self, variables: Mapping[str, str] | None = None, name: str = "gateway") -> None:
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "gateway", "serve", "--port", str(port)]

        super().__init__(name, command, _healthy, env=gateway_environment(variables))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def readyz(self) -> dict[str, Any]:
        """The body of `GET /readyz`: the detailed report (it sends the admin token)."""
        response = httpx.get(f"{self.url}/readyz", headers=ADMIN_HEADERS, timeout=10)
        body: dict[str, Any] = response.json()
        return body


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
