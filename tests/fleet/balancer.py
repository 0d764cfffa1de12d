"""A load balancer in the test process, as an orchestrator's would act in front of a fleet.

It sends each request to the next backend that it holds ready, and holds a backend ready while
its public `/readyz` answers 200 (polled, as a load balancer's health check does). It retries
a request on another backend only when the connection was refused: then nothing was sent, so
nothing can run twice (what nginx's `proxy_next_upstream error` and Envoy's `connect-failure`
do). Any other failure reaches the client, and is counted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess
from tests.support.waiting import eventually

__all__ = ["Balancer"]

#: Seconds between two health checks of a backend.
CHECK_INTERVAL = 0.05


@dataclass
class Balancer:
    backends: Sequence[GatewayProcess]
    http: httpx.AsyncClient
    #: Backend names whose last health check answered 200.
    ready: set[str] = field(default_factory=set)
    #: Requests sent to each backend and not answered yet.
    in_flight: Counter[str] = field(default_factory=Counter)
    #: Requests each backend answered.
    answered: Counter[str] = field(default_factory=Counter)
    #: Connections refused (retried elsewhere): proof of a backend that closed before the
    #: balancer stopped sending it requests.
    refused: int = 0
    #: What each backend's health check answered, in order (its status changes only).
    statuses: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._turn = itertools.count()
        self._checks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Balancer:
        self._checks = [asyncio.create_task(self._check(backend)) for backend in self.backends]
        await eventually(lambda: len(self.ready) == len(self.backends), "every backend ready")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for check in self._checks:
            check.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST `body` to `path` of a ready backend (waiting for one, if none is)."""
        while True:
            await eventually(lambda: bool(self.ready), "a ready backend")
            backend = self._next()
            if backend is None:
                continue
            self.in_flight[backend.name] += 1
            try:
                response = await self.http.post(f"{backend.url}{path}", json=body)
            except httpx.ConnectError:
                self.refused += 1
                self.ready.discard(backend.name)
                continue
            finally:
                self.in_flight[backend.name] -= 1
            self.answered[backend.name] += 1
            return response

    def _next(self) -> GatewayProcess | None:
        ready = [backend for backend in self.backends if backend.name in self.ready]
        return ready[next(self._turn) % len(ready)] if ready else None

    async def _check(self, backend: GatewayProcess) -> None:
        history = self.statuses.setdefault(backend.name, [])
        while True:
            try:
                response = await self.http.get(f"{backend.url}/readyz", timeout=30)
                status = response.json()["status"]
                healthy = response.status_code == 200
            except httpx.TransportError:
                status, healthy = "down", False
            if not history or history[-1] != status:
                history.append(status)
            if healthy:
                self.ready.add(backend.name)
            else:
                self.ready.discard(backend.name)
            await asyncio.sleep(CHECK_INTERVAL)
