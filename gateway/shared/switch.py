"""`BackendSwitch`: whether the shared backend (Redis) serves, or this process serves alone.

One switch per process and backend, shared by every part that uses it (the budget, the snapshot
cache, the fetch claims): an outage is noticed, logged and ended once. Its rules:

- While healthy, every call goes to the backend (route PRIMARY). A call that raises
  `BackendUnavailable` (and only that: any other error is an answer or a bug, not an outage)
  makes the switch *degraded*, and the caller serves itself locally.
- While degraded, calls are served locally (route FALLBACK), except one *probe* at most every
  `probe_interval` seconds: the first call after the interval tries the backend (route PROBE;
  the others stay local meanwhile, so that at most one call at a time pays for an unreachable
  backend). A probe that succeeds ends the outage; one that fails waits another interval. A
  health check that saw the backend answer (`answered()`) stands in for a probe, so that an idle
  process, which makes no calls, comes back too.
- One WARNING when the switch goes to degraded, one when it comes back. A call routed before a
  switch that ends after it proves nothing and changes nothing.

Single-threaded (one event loop), and no method awaits except `serve`: every transition is
atomic. Parts that must prepare for a transition (the budget settles in and back) register with
`on_switch`.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.shared.backend import BackendUnavailable

__all__ = ["DEFAULT_PROBE_INTERVAL", "BackendSwitch", "Route", "SwitchStatus"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between two attempts to use an unreachable backend again.
DEFAULT_PROBE_INTERVAL = 1.0


class Route(enum.Enum):
    """Where one call goes."""

    PRIMARY = "primary"
    PROBE = "probe"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class SwitchStatus:
    """Which side serves, for /readyz."""

    #: True while this process serves alone because the backend did not answer.
    degraded: bool
    #: Seconds since the backend stopped answering; None while it serves.
    degraded_for: float | None
    #: Times the switch went to degraded since it was made.
    failovers: int
    #: Why the backend last failed (host and port at most, no secret); None if it never did.
    last_error: str | None


class BackendSwitch:
    """See the module docstring. `name` names the backend in log lines; `local_mode` and
    `shared_mode` say in a few words what serves in each state ("a local budget of 50 calls/s,
    ...")."""

    def __init__(
        self,
        *,
        name: str = "Redis",
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        local_mode: str = "serving from this process alone",
        shared_mode: str = "serving from the shared backend",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if probe_interval < 0:
            raise ValueError(
                f"Expected a probe interval of at least 0 s, received {probe_interval}."
            )
        self._name = name
        self._probe_interval = probe_interval
        self._local_mode = local_mode
        self._shared_mode = shared_mode
        self._clock = clock
        self._listeners: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._degraded_since: float | None = None
        self._next_probe = -math.inf
        self._probing = False
        self._failovers = 0
        self._last_error: str | None = None

    @property
    def probe_interval(self) -> float:
        return self._probe_interval

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    @property
    def next_probe(self) -> float:
        """When a call may next probe the backend: -inf while it is healthy, inf while a
        probe is under way."""
        if self._degraded_since is None:
            return -math.inf
        return math.inf if self._probing else self._next_probe

    def on_switch(self, degraded: Callable[[], None], recovered: Callable[[], None]) -> None:
        """Call `degraded()` when the switch goes to degraded, `recovered()` when it is back
        (each before the transition's log line, and before the call that caused it goes on)."""
        self._listeners.append((degraded, recovered))

    def route(self) -> Route:
        """Where the call starting now goes. A PROBE must be ended by exactly one of
        `succeeded`, `failed` or `abandoned`."""
        if self._degraded_since is None:
            return Route.PRIMARY
        if self._probing or self._clock() < self._next_probe:
            return Route.FALLBACK
        self._probing = True
        return Route.PROBE

    def succeeded(self, route: Route) -> None:
        """The backend answered a call that took `route`."""
        if route is not Route.PROBE:
            return  # healthy already, or a call from before the outage: proves nothing now
        self._probing = False
        self._degraded_since = None
        for _, recovered in self._listeners:
            recovered()
        logger.warning("%s reachable again: %s", self._name, self._shared_mode)

    def failed(self, route: Route, exc: BackendUnavailable) -> None:
        """The backend did not answer a call that took `route` (PRIMARY for a release)."""
        self._last_error = exc.reason
        now = self._clock()
        if route is Route.PROBE:
            self._probing = False
            self._next_probe = now + self._probe_interval
        elif self._degraded_since is None:
            self._degraded_since = now
            self._next_probe = now + self._probe_interval
            self._failovers += 1
            for degraded, _ in self._listeners:
                degraded()
            logger.warning("%s unreachable (%s): %s", self._name, exc.reason, self._local_mode)

    def abandoned(self, route: Route) -> None:
        """A call ended with no verdict on the backend (cancelled, or another error)."""
        if route is Route.PROBE:
            self._probing = False
            self._next_probe = self._clock() + self._probe_interval

    def answered(self) -> None:
        """The backend answered a health check: it counts as a successful probe, if one is due."""
        route = self.route()
        if route is Route.PROBE:
            self.succeeded(route)

    async def serve(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """`primary()` while the backend answers (or when its probe is due), else `fallback()`:
        one call's trip through the switch, for parts whose two sides need nothing of each
        other (the cache and the claims; the budget's slots need more, see
        `gateway.budget.failover`)."""
        route = self.route()
        if route is not Route.FALLBACK:
            try:
                answer = await primary()
            except BackendUnavailable as exc:
                self.failed(route, exc)
            except BaseException:
                self.abandoned(route)
                raise
            else:
                self.succeeded(route)
                return answer
        return await fallback()

    def status(self) -> SwitchStatus:
        since = self._degraded_since
        return SwitchStatus(
            degraded=since is not None,
            degraded_for=None if since is None else max(0.0, self._clock() - since),
            failovers=self._failovers,
            last_error=self._last_error,
        )
