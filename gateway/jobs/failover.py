"""Failover from a shared backend (Redis) to a local one: `FailoverBudget` and `FailoverCache`.

A gateway that cannot reach Redis must keep serving: a Redis outage costs sharing (each process
then budgets and caches alone), never answers. Each wrapper holds a `primary` (the shared
implementation) and a `fallback` (the local one) and follows these rules:

- A call goes to the primary while it is healthy. When the primary raises `BackendUnavailable`
  (and only that: `BudgetExhausted`, or any other error, is an answer, not an outage), the same
  call is served by the fallback at once, and the wrapper is *degraded*.
- While degraded, calls go straight to the fallback, without touching the primary, except one
  *probe* at most every `probe_interval` seconds: the first call after the interval tries the
  primary (the others keep using the fallback meanwhile, so at most one call at a time pays for
  an unreachable Redis, bounded by the Redis client's timeout). When the probe succeeds the
  primary serves again; when it fails, it is served by the fallback and the next probe waits
  another interval. A health check that saw the backend answer (/readyz PINGs Redis) may stand
  in for a probe through `backend_answered()`, so that an idle process, which makes no calls,
  goes back to the primary too, and says so.
- One WARNING when switching to the fallback, one when switching back; nothing per call. A
  primary call that started before a switch and ends after it changes nothing.
- A budget slot is released on the side that granted it. If releasing on the primary fails, the
  slot is left to expire there on its own (the shared budget holds slots on leases), and the
  failure counts like any other.

A word on safety: while degraded, each process allows itself its local fallback's limit (the
account's limit divided by the expected number of replicas), so all of them together stay under
the account's limit when they all lose Redis, which is what an outage of the shared Redis does.
A process that alone loses Redis (a partition) adds its share on top of what the others take
through Redis, until its next successful probe: the account can then see up to that share too
many calls, which the upstream answers with Throttling and the budgets slow down for.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType

from gateway import errors
from gateway.jobs.backend import BackendUnavailable
from gateway.jobs.budget import Budget, BudgetStatus
from gateway.jobs.cache import CacheEntry, SnapshotCache
from gateway.jobs.model import Job

__all__ = ["DEFAULT_PROBE_INTERVAL", "FailoverBudget", "FailoverCache", "FailoverStatus"]

logger = logging.getLogger(__name__)

#: Seconds between two attempts to use an unreachable primary again.
DEFAULT_PROBE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class FailoverStatus:
    """Which side of a failover serves, for /readyz."""

    #: True while the fallback serves because the primary did not answer.
    degraded: bool
    #: "primary" or "fallback": who serves a call arriving now (bar a probe).
    serving: str
    #: Seconds since the primary stopped answering; None while it serves.
    degraded_for: float | None
    #: Times the wrapper switched to the fallback since it was made.
    failovers: int
    #: Why the primary last failed (host and port at most, no secret); None if it never did.
    last_error: str | None


class _Route(enum.Enum):
    PRIMARY = "primary"
    PROBE = "probe"
    FALLBACK = "fallback"


class _Switch:
    """The state shared by both wrappers: healthy or degraded, and when to probe.

    Single-threaded (one event loop), and no method awaits: every transition is atomic.
    """

    def __init__(
        self,
        *,
        probe_interval: float,
        clock: Callable[[], float],
        on_degraded: Callable[[BackendUnavailable], None],
        on_recovered: Callable[[], None],
    ) -> None:
        if probe_interval < 0:
            raise ValueError(
                f"Expected a probe interval of at least 0 s, received {probe_interval}."
            )
        self._probe_interval = probe_interval
        self._clock = clock
        self._on_degraded = on_degraded
        self._on_recovered = on_recovered
        self._degraded_since: float | None = None
        self._next_probe = 0.0
        self._probing = False
        self._failovers = 0
        self._last_error: str | None = None

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    def route(self) -> _Route:
        """Where the call starting now goes. A PROBE must be ended by exactly one of
        `succeeded`, `failed` or `abandoned`."""
        if self._degraded_since is None:
            return _Route.PRIMARY
        if self._probing or self._clock() < self._next_probe:
            return _Route.FALLBACK
        self._probing = True
        return _Route.PROBE

    def succeeded(self, route: _Route) -> None:
        """The primary answered a call that took `route`."""
        if route is not _Route.PROBE:
            return  # healthy already, or a call from before the outage: proves nothing now
        self._probing = False
        self._degraded_since = None
        self._on_recovered()

    def failed(self, route: _Route, exc: BackendUnavailable) -> None:
        """The primary did not answer a call that took `route` (PRIMARY for a release)."""
        self._last_error = exc.reason
        now = self._clock()
        if route is _Route.PROBE:
            self._probing = False
            self._next_probe = now + self._probe_interval
        elif self._degraded_since is None:
            self._degraded_since = now
            self._next_probe = now + self._probe_interval
            self._failovers += 1
            self._on_degraded(exc)

    def answered(self) -> None:
        """The backend answered a health check: it counts as a successful probe, if one is due."""
        route = self.route()
        if route is _Route.PROBE:
            self.succeeded(route)

    def abandoned(self, route: _Route) -> None:
        """A call ended with no verdict on the primary (cancelled, or another error)."""
        if route is _Route.PROBE:
            self._probing = False
            self._next_probe = self._clock() + self._probe_interval

    def status(self) -> FailoverStatus:
        since = self._degraded_since
        return FailoverStatus(
            degraded=since is not None,
            serving="primary" if since is None else "fallback",
            degraded_for=None if since is None else max(0.0, self._clock() - since),
            failovers=self._failovers,
            last_error=self._last_error,
        )


class FailoverBudget:
    """A `Budget` served by `primary` (shared) and, while it does not answer, by `fallback`.

    The fallback's limit should be this process's share of the account's (see the module
    docstring). `clock` times the probes; it need not be the budgets' clock. `name` names the
    primary in log lines.
    """

    def __init__(
        self,
        primary: Budget,
        fallback: Budget,
        *,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        name: str = "Redis",
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._name = name
        self._switch = _Switch(
            probe_interval=probe_interval,
            clock=clock,
            on_degraded=self._log_degraded,
            on_recovered=self._log_recovered,
        )

    @property
    def primary(self) -> Budget:
        return self._primary

    @property
    def fallback(self) -> Budget:
        return self._fallback

    @property
    def degraded(self) -> bool:
        return self._switch.degraded

    @property
    def limit(self) -> int:
        return self._serving().limit

    def slot(
        self, deadline: float, *, key: Hashable | None = None
    ) -> AbstractAsyncContextManager[None]:
        return _FailoverSlot(self, deadline, key)

    async def throttled(self) -> None:
        """Tell the side serving now: its rate is the one that must come down."""
        if not self._switch.degraded:
            try:
                await self._primary.throttled()
            except BackendUnavailable as exc:
                self._switch.failed(_Route.PRIMARY, exc)
            else:
                return
        await self._fallback.throttled()

    def snapshot(self) -> BudgetStatus:
        """The snapshot of the side serving now."""
        if self._switch.degraded:
            return self._fallback.snapshot()
        try:
            return self._primary.snapshot()
        except BackendUnavailable:
            # A snapshot is a hint (retry_after, /readyz): the fallback's will do.
            return self._fallback.snapshot()

    def status(self) -> FailoverStatus:
        return self._switch.status()

    def backend_answered(self) -> None:
        """The primary's backend just answered a health check: while degraded, and when a probe
        is due, serve from the primary again."""
        self._switch.answered()

    def _serving(self) -> Budget:
        return self._fallback if self._switch.degraded else self._primary

    def _log_degraded(self, exc: BackendUnavailable) -> None:
        logger.warning(
            "%s unreachable (%s), serving on a local budget of %d calls/s",
            self._name,
            exc.reason,
            self._fallback.limit,
        )

    def _log_recovered(self) -> None:
        logger.warning(
            "%s reachable again, serving on the shared budget of %d calls/s",
            self._name,
            self._primary.limit,
        )


class _FailoverSlot:
    """One slot from whichever side grants it, released on that same side."""

    __slots__ = ("_budget", "_deadline", "_inner", "_key", "_on_primary")

    def __init__(self, budget: FailoverBudget, deadline: float, key: Hashable | None) -> None:
        self._budget = budget
        self._deadline = deadline
        self._key = key
        self._inner: AbstractAsyncContextManager[None] | None = None
        self._on_primary = False

    async def __aenter__(self) -> None:
        if self._inner is not None:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        switch = self._budget._switch
        route = switch.route()
        if route is not _Route.FALLBACK:
            inner = self._budget._primary.slot(self._deadline, key=self._key)
            try:
                await inner.__aenter__()
            except BackendUnavailable as exc:
                switch.failed(route, exc)
            except errors.BudgetExhausted:
                switch.succeeded(route)  # the shared budget answered: it is full, not down
                raise
            except BaseException:
                switch.abandoned(route)
                raise
            else:
                switch.succeeded(route)
                self._inner, self._on_primary = inner, True
                return
        inner = self._budget._fallback.slot(self._deadline, key=self._key)
        await inner.__aenter__()
        self._inner, self._on_primary = inner, False

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inner, self._inner = self._inner, None
        if inner is None:
            return
        try:
            await inner.__aexit__(exc_type, exc, tb)
        except BackendUnavailable as failure:
            # The call itself is done; only the release did not reach the shared budget, whose
            # slot now expires on its own. The caller's outcome must not change for that.
            logger.debug("Releasing a shared budget slot failed: %s", failure.reason)
            self._budget._switch.failed(_Route.PRIMARY, failure)


class FailoverCache:
    """A `SnapshotCache` served by `primary` (shared) and, while it does not answer, by
    `fallback` (this process's memory). `name` names the primary in log lines."""

    def __init__(
        self,
        primary: SnapshotCache,
        fallback: SnapshotCache,
        *,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        name: str = "Redis",
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._name = name
        self._switch = _Switch(
            probe_interval=probe_interval,
            clock=clock,
            on_degraded=self._log_degraded,
            on_recovered=self._log_recovered,
        )

    @property
    def primary(self) -> SnapshotCache:
        return self._primary

    @property
    def fallback(self) -> SnapshotCache:
        return self._fallback

    @property
    def degraded(self) -> bool:
        return self._switch.degraded

    def status(self) -> FailoverStatus:
        return self._switch.status()

    def backend_answered(self) -> None:
        """The primary's backend just answered a health check: while degraded, and when a probe
        is due, serve from the primary again."""
        self._switch.answered()

    async def get(self, job_id: str) -> CacheEntry | None:
        route = self._switch.route()
        if route is not _Route.FALLBACK:
            try:
                entry = await self._primary.get(job_id)
            except BackendUnavailable as exc:
                self._switch.failed(route, exc)
            except BaseException:
                self._switch.abandoned(route)
                raise
            else:
                self._switch.succeeded(route)
                return entry
        return await self._fallback.get(job_id)

    def peek_finished(self, job_id: str) -> Job | None:
        # Both sides' memories: a final snapshot is true wherever it was kept.
        return self._primary.peek_finished(job_id) or self._fallback.peek_finished(job_id)

    async def put(self, job_id: str, job: Job | None) -> None:
        route = self._switch.route()
        if route is not _Route.FALLBACK:
            try:
                await self._primary.put(job_id, job)
            except BackendUnavailable as exc:
                self._switch.failed(route, exc)
            except BaseException:
                self._switch.abandoned(route)
                raise
            else:
                self._switch.succeeded(route)
                return
        await self._fallback.put(job_id, job)

    def _log_degraded(self, exc: BackendUnavailable) -> None:
        logger.warning(
            "%s unreachable (%s), caching job snapshots in this process only",
            self._name,
            exc.reason,
        )

    def _log_recovered(self) -> None:
        logger.warning("%s reachable again, back on the shared snapshot cache", self._name)
