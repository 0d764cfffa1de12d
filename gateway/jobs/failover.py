"""Failover from a shared backend (Redis) to a local one: `FailoverBudget`, `FailoverCache` and
`FailoverClaims`.

A gateway that cannot reach Redis must keep serving: a Redis outage costs sharing (each process
then budgets and caches alone), never answers. Each wrapper holds a `primary` (the shared
implementation) and a `fallback` (the local one) and follows these rules:

- A call goes to the primary while it is healthy. When the primary raises `BackendUnavailable`
  (and only that: `BudgetExhausted`, or any other error, is an answer, not an outage), the same
  call is served by the fallback (a budget's after settling in, see below), with no error, and
  the wrapper is *degraded*.
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
- Fetch claims have no local side: while degraded, a fetch claims nothing and calls (each
  process then coalesces alone, as its cache is its own anyway). A lease is released on the
  primary that granted it; a release that fails counts like any other failure, and the claim
  expires on its own.
- A budget slot is released on the side that granted it. If releasing on the primary fails, the
  slot is left to expire there on its own (the shared budget holds slots on leases), and the
  failure counts like any other.

The budget's switches keep the account's limit (the two sides know nothing of each other's
slots, so a naive switch could let a second's worth of calls through twice):

- While degraded, each process allows itself its fallback's limit: the account's limit divided
  by the expected number of replicas, so that all of them together stay under the account's
  limit when they all lose Redis, which is what an outage of the shared Redis does.
- *Settling in.* The slots the fleet took through Redis just before the outage are still held
  (by the upstream's count) for one window, and the local budgets know nothing of them. So
  after switching to the fallback, no fallback slot is granted before `settle` seconds (one
  window) have passed: the calls in that second wait (a caller whose deadline comes first gets
  `BudgetExhausted` at once, with the time to retry).
- *Settling back.* Redis comes back knowing nothing of the local slots, and the other processes
  come back one by one (each at its next probe, within `probe_interval`). So for
  `probe_interval + settle` seconds after switching back, every call takes a slot on BOTH
  sides: the process stays within its local share until every busy process is back and every
  purely local slot has expired, and from then on Redis counts everything.
- Left over: a call in flight across a switch for longer than the settling time, and a process
  that alone loses Redis (a partition), which adds its share on top of what the others take
  through Redis until its next successful probe. The upstream answers the excess with
  Throttling, which the budgets slow down for.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from gateway import errors
from gateway.jobs.backend import BackendUnavailable
from gateway.jobs.budget import Budget, BudgetStatus
from gateway.jobs.cache import CacheEntry, SnapshotCache
from gateway.jobs.claims import NO_LEASE, ClaimOutcome, FetchClaims, Held, Lease
from gateway.jobs.model import Job

__all__ = [
    "DEFAULT_PROBE_INTERVAL",
    "FailoverBudget",
    "FailoverCache",
    "FailoverClaims",
    "FailoverStatus",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

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

    async def serve(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """`primary()` while it answers (or when its probe is due), else `fallback()`: one
        call's trip through the switch, for wrappers whose two sides need nothing of each other
        (the cache and the claims; the budget's slots need more and do it themselves)."""
        route = self.route()
        if route is not _Route.FALLBACK:
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

    def status(self) -> FailoverStatus:
        since = self._degraded_since
        return FailoverStatus(
            degraded=since is not None,
            serving="primary" if since is None else "fallback",
            degraded_for=None if since is None else max(0.0, self._clock() - since),
            failovers=self._failovers,
            last_error=self._last_error,
        )


class _Failover(abc.ABC):
    """What the three wrappers share: a name for log lines and the switch between the primary
    and its stand-in, with its status and its health-check hook."""

    def __init__(self, *, name: str, probe_interval: float, clock: Callable[[], float]) -> None:
        self._name = name
        self._switch = _Switch(
            probe_interval=probe_interval,
            clock=clock,
            on_degraded=self._degraded,
            on_recovered=self._recovered,
        )

    @property
    def degraded(self) -> bool:
        return self._switch.degraded

    def status(self) -> FailoverStatus:
        return self._switch.status()

    def backend_answered(self) -> None:
        """The primary's backend just answered a health check: while degraded, and when a probe
        is due, use the primary again."""
        self._switch.answered()

    @abc.abstractmethod
    def _degraded(self, exc: BackendUnavailable) -> None:
        """Called once when the primary stops answering: say (and prepare) what serves now."""

    @abc.abstractmethod
    def _recovered(self) -> None:
        """Called once when the primary answers again."""


class FailoverBudget(_Failover):
    """A `Budget` served by `primary` (shared) and, while it does not answer, by `fallback`.

    The fallback's limit should be this process's share of the account's (see the module
    docstring). `settle` is the settling time of a switch (None: the fallback's window).
    `clock` is the clock of the deadlines (the budgets' clock) and times the probes; `sleep`
    waits on it. `name` names the primary in log lines.
    """

    def __init__(
        self,
        primary: Budget,
        fallback: Budget,
        *,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        settle: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        name: str = "Redis",
    ) -> None:
        if settle is not None and settle < 0:
            raise ValueError(f"Expected a settling time of at least 0 s, received {settle}.")
        self._primary = primary
        self._fallback = fallback
        self._probe_interval = probe_interval
        self._settle = fallback.snapshot().window if settle is None else settle
        self._clock = clock
        self._sleep = sleep
        #: No slot is granted on the fallback before this time (settling in).
        self._fallback_from = -math.inf
        #: Until this time, a slot on the primary also takes one on the fallback (settling back).
        self._both_until = -math.inf
        super().__init__(name=name, probe_interval=probe_interval, clock=clock)

    @property
    def primary(self) -> Budget:
        return self._primary

    @property
    def fallback(self) -> Budget:
        return self._fallback

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

    def _serving(self) -> Budget:
        return self._fallback if self._switch.degraded else self._primary

    def _degraded(self, exc: BackendUnavailable) -> None:
        self._fallback_from = self._clock() + self._settle
        logger.warning(
            "%s unreachable (%s), serving on a local budget of %d calls/s",
            self._name,
            exc.reason,
            self._fallback.limit,
        )

    def _recovered(self) -> None:
        self._both_until = self._clock() + self._probe_interval + self._settle
        logger.warning(
            "%s reachable again, serving on the shared budget of %d calls/s",
            self._name,
            self._primary.limit,
        )


class _FailoverSlot:
    """One slot from the side (or, while settling back, both sides) serving, each released on
    the side that granted it."""

    __slots__ = ("_budget", "_deadline", "_entered", "_held", "_key")

    def __init__(self, budget: FailoverBudget, deadline: float, key: Hashable | None) -> None:
        self._budget = budget
        self._deadline = deadline
        self._key = key
        self._entered = False
        # The slots held, in the order taken: (context manager, whether it is the primary's).
        self._held: list[tuple[AbstractAsyncContextManager[None], bool]] = []

    async def __aenter__(self) -> None:
        if self._entered:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        self._entered = True
        budget = self._budget
        route = budget._switch.route()
        try:
            # The local slot first: waiting for it must not hold a slot of the whole fleet.
            if route is not _Route.PRIMARY or budget._clock() < budget._both_until:
                try:
                    await self._enter_fallback()
                except BaseException:
                    # The primary was never asked: a probe handed out for this call must be
                    # given back, or no later call would probe and the process would stay on
                    # its local budget for good.
                    budget._switch.abandoned(route)
                    raise
            if route is not _Route.FALLBACK:
                await self._enter_primary(route)
        except BaseException:
            await self._release(None, None, None)
            raise

    async def _enter_primary(self, route: _Route) -> None:
        switch = self._budget._switch
        inner = self._budget._primary.slot(self._deadline, key=self._key)
        try:
            await inner.__aenter__()
        except BackendUnavailable as exc:
            switch.failed(route, exc)
            if not self._held:
                await self._enter_fallback()
            return
        except errors.BudgetExhausted:
            switch.succeeded(route)  # the shared budget answered: it is full, not down
            raise
        except BaseException:
            switch.abandoned(route)
            raise
        switch.succeeded(route)
        self._held.append((inner, True))

    async def _enter_fallback(self) -> None:
        budget = self._budget
        wait = budget._fallback_from - budget._clock()
        if wait > 0:
            # Settling in: the fleet's last second through Redis still counts upstream.
            if budget._clock() + wait > self._deadline:
                raise errors.BudgetExhausted(retry_after=wait)
            await budget._sleep(wait)
        inner = budget._fallback.slot(self._deadline, key=self._key)
        await inner.__aenter__()
        self._held.append((inner, False))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release(exc_type, exc, tb)

    async def _release(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self._held = self._held, []
        for inner, on_primary in reversed(held):
            try:
                await inner.__aexit__(exc_type, exc, tb)
            except BackendUnavailable as failure:
                if not on_primary:
                    raise
                # The call itself is done; only the release did not reach the shared budget,
                # whose slot now expires on its own. The caller's outcome must not change.
                logger.debug("Releasing a shared budget slot failed: %s", failure.reason)
                self._budget._switch.failed(_Route.PRIMARY, failure)


class FailoverCache(_Failover):
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
        super().__init__(name=name, probe_interval=probe_interval, clock=clock)

    @property
    def primary(self) -> SnapshotCache:
        return self._primary

    @property
    def fallback(self) -> SnapshotCache:
        return self._fallback

    async def get(self, job_id: str) -> CacheEntry | None:
        return await self._switch.serve(
            lambda: self._primary.get(job_id), lambda: self._fallback.get(job_id)
        )

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        """`get` for many ids at once, by the same rules: the whole batch goes to one side."""
        return await self._switch.serve(
            lambda: self._primary.get_many(job_ids), lambda: self._fallback.get_many(job_ids)
        )

    def peek_finished(self, job_id: str) -> Job | None:
        # Both sides' memories: a final snapshot is true wherever it was kept.
        return self._primary.peek_finished(job_id) or self._fallback.peek_finished(job_id)

    async def put(self, job_id: str, job: Job | None) -> None:
        await self._switch.serve(
            lambda: self._primary.put(job_id, job), lambda: self._fallback.put(job_id, job)
        )

    def _degraded(self, exc: BackendUnavailable) -> None:
        logger.warning(
            "%s unreachable (%s), caching job snapshots in this process only",
            self._name,
            exc.reason,
        )

    def _recovered(self) -> None:
        logger.warning("%s reachable again, back on the shared snapshot cache", self._name)


class FailoverClaims(_Failover):
    """`FetchClaims` served by `primary` (shared) and, while it does not answer, by nobody: a
    fetch then holds `NO_LEASE` and calls, as a lone process would. `name` names the primary in
    log lines."""

    def __init__(
        self,
        primary: FetchClaims,
        *,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        name: str = "Redis",
    ) -> None:
        self._primary = primary
        super().__init__(name=name, probe_interval=probe_interval, clock=clock)

    @property
    def primary(self) -> FetchClaims:
        return self._primary

    async def claim(self, job_id: str, *, attempt: int = 0) -> ClaimOutcome:
        """The primary's answer, or `NO_LEASE` (call without a claim) when it does not answer."""

        async def no_claim() -> ClaimOutcome:
            return NO_LEASE

        outcome = await self._switch.serve(
            lambda: self._primary.claim(job_id, attempt=attempt), no_claim
        )
        if isinstance(outcome, CacheEntry | Held) or outcome is NO_LEASE:
            return outcome
        return _FailoverLease(outcome, self._switch)

    def _degraded(self, exc: BackendUnavailable) -> None:
        logger.warning(
            "%s unreachable (%s), fetching without fleet-wide claims (each process calls "
            "for itself)",
            self._name,
            exc.reason,
        )

    def _recovered(self) -> None:
        logger.warning("%s reachable again, claiming fetches fleet-wide", self._name)


class _FailoverLease:
    """A primary's lease, whose failed release counts as the primary failing."""

    __slots__ = ("_inner", "_switch")

    def __init__(self, inner: Lease, switch: _Switch) -> None:
        self._inner = inner
        self._switch = switch

    async def release(self) -> None:
        try:
            await self._inner.release()
        except BackendUnavailable as exc:
            # The fetch is over; its claim now expires on its own.
            self._switch.failed(_Route.PRIMARY, exc)
            raise
