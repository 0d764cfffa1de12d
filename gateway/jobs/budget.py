"""The upstream call budget: at most `limit` calls in any rolling window, shared fairly.

The account may call QueryIProductionJob at most N times in any rolling second, and the upstream
counts a call when it *arrives*. We only know when we send a call and when its answer comes back;
the arrival lies somewhere in between. A log of send times is therefore not safe: two calls sent
1.0 s apart arrive less than 1 s apart when the first is delayed on its way (the network, or an
event loop stalled on a loaded 2-core machine), and N+1 arrivals can land in one second.

So every call holds a *slot* from the moment it is granted until `window` seconds after it
COMPLETES, and at most `limit` slots exist. This is provably safe: take any N+1 calls that arrive
within less than a second of each other, and let k be the one granted last. Every other call i of
them arrived before k's arrival plus one second, and i arrived before its answer came back, so
its slot (answer + window, with window >= 1 s) was still held when k was granted: N held slots
plus k's own is N+1, which the budget never allows. It still allows a burst of N calls at once,
then paces at N calls per (window + latency). A token bucket refilled at N/s with capacity N is
wrong here: it lets 2N calls through in one second.

`window` is 1 s plus `GatewaySettings.upstream_window_margin`, room for the two clocks' rounding.

Why our own code rather than a library (DESIGN.md section 4 prefers one): `limits`' moving window
logs a hit when it is *taken* and has no notion of completion, so it cannot express the
completion-time rule; nor does it queue waiters fairly or shed load against a deadline.

**Fairness.** Callers pass a `key` (the fetcher passes one per GraphQL request). Waiters are
grouped by key and served round-robin across keys, FIFO within a key, a key that was just served
going to the back (`gateway.jobs.fair_queue`). So a request for one id that arrives behind
another request's thousand waits for about one turn of each waiting key, not for the thousand.
Callers that pass no key share one key: among themselves they are served in arrival order. A
newcomer never takes a freed slot ahead of a waiter: while anyone waits, newcomers queue.

**Concurrency.** A slot is granted only while fewer than `max_in_flight` calls of this process
are in flight (the budget's own limit, so that no FIFO stands in front of the fair queue).

**Load shedding.** A caller passes an absolute `deadline`. If the earliest moment it could
possibly be served is after that deadline, it gets `BudgetExhausted` at once instead of waiting
in vain, and if the deadline passes while it waits, it gets `BudgetExhausted` then. "Earliest"
is a lower bound, so nobody is refused who could have been served: the caller's position is
`FairQueue.position` (a lower bound on the waiters the round-robin serves before it: about its
index within its key times the number of keys waiting), the slots are assumed to free as early
as they can (`earliest_grant`), the effective limit as it will be at the deadline (it only grows
between throttles), and `max_in_flight` is left out (in-flight calls may end at any moment). A
waiter that is cancelled leaves the queue and consumes nothing.

**Adaptive rate.** When a call inside a slot is throttled by the upstream although the budget
held (another client shares the account), the caller reports it with `throttled()`: the
*effective* limit, which grants use, is halved at once and climbs back additively, but only up
to a ceiling learned from the throttle (0.9 of the rate that was throttled), which itself creeps
back to `limit` over minutes (`gateway.jobs.adaptive`): under a co-tenant that keeps its share
the rate settles under what the upstream allows instead of probing it every few seconds.
Throttles within one window of the last decrease are the same burst.

Time is injected, as in aiolimiter: `clock` reads the time and `call_later` schedules the
budget's timers (a waiter's deadline, the moment the oldest held slot frees). By default they are
`time.monotonic` and the running loop's `call_later`; tests pass a manual clock whose timers fire
when the test moves time, so they never sleep. The budget never trusts a timer to be exact: when
one fires it reads the clock again and re-arms if it fired early.

`Budget` is the protocol the fetcher uses; `LocalBudget` serves one process, and
`gateway.jobs.redis_budget.RedisBudget` a fleet of processes sharing the account through Redis,
with the same semantics (the behaviour tests run against both).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from gateway import errors
from gateway.jobs.adaptive import (
    DEFAULT_CEILING_FACTOR,
    DEFAULT_CEILING_RECOVERY_TIME,
    DEFAULT_DECREASE_FACTOR,
    DEFAULT_RECOVERY_RATE,
    AdaptiveLimit,
    AimdRule,
)
from gateway.jobs.fair_queue import FairQueue, Ticket
from gateway.settings import GatewaySettings

__all__ = [
    "Budget",
    "BudgetStatus",
    "CallLater",
    "LocalBudget",
    "TimerHandle",
    "earliest_grant",
]

logger = logging.getLogger(__name__)


class TimerHandle(Protocol):
    """What `call_later` returns: something that can be cancelled (as `asyncio.TimerHandle`)."""

    def cancel(self) -> None: ...


#: Schedules `callback()` after `delay` seconds of the budget's clock (as `loop.call_later`).
CallLater = Callable[[float, Callable[[], None]], TimerHandle]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's state at one moment, for health checks and load-shedding hints.

    For a shared budget, `in_flight` and `waiting` are this process's, and `recent` and
    `effective_limit` the fleet's as last seen.
    """

    #: Calls allowed per window, as configured.
    limit: int
    #: Calls allowed per window now: `limit`, or less after the upstream throttled.
    effective_limit: int
    #: Seconds a completed call keeps its slot.
    window: float
    #: Calls granted and not yet completed.
    in_flight: int
    #: Completed calls whose slot is still held (completed less than `window` ago).
    recent: int
    #: Callers queued for a slot.
    waiting: int
    #: Lower bound on the seconds before a caller arriving now, with a key of its own, could
    #: be granted a slot (0: free now).
    next_free_in: float
    #: Calls per window the effective limit may climb back to for now: `limit`, or less while
    #: the ceiling learned from a throttle creeps back (`gateway.jobs.adaptive`). None from a
    #: budget that learns no ceiling. Last, with a default, so that such budgets need not pass it.
    ceiling: int | None = None


class Budget(Protocol):
    """An upstream call budget. Usage: `async with budget.slot(deadline, key=k): await call()`.

    Guarantees of every implementation:
    - at most the effective limit (`limit`, lowered for a while by `throttled()`) of slots are
      held at any time; a slot is held from its grant until `window` seconds after the call
      completes (the body exits, by return, exception or cancellation);
    - waiters are served round-robin across keys, in arrival order within a key;
    - `slot(deadline)` raises `BudgetExhausted` without waiting when the earliest possible grant
      is after `deadline`, and when `deadline` passes while waiting;
    - a caller cancelled while waiting consumes nothing.
    A shared implementation may also raise `gateway.jobs.backend.BackendUnavailable` (from
    `slot` entry and exit, and from `throttled`) when its backend does not answer.
    """

    @property
    def limit(self) -> int: ...

    def slot(
        self, deadline: float, *, key: Hashable | None = None
    ) -> AbstractAsyncContextManager[None]:
        """A context manager that holds one slot while its body runs. `deadline` is an
        absolute time on the budget's clock; `key` groups waiters for fairness (None: the
        key of every caller that passes none)."""
        ...

    async def throttled(self) -> None:
        """Report that a call made inside a slot was throttled by the upstream."""
        ...

    def snapshot(self) -> BudgetStatus: ...


def earliest_grant(
    position: int,
    *,
    now: float,
    limit: int,
    window: float,
    held: int,
    free_at: Callable[[int], float],
) -> float:
    """Lower bound on when the caller with `position` grants ahead of it gets a slot.

    `held` slots are held now; `free_at(i)` (for 0 <= i < held, non-decreasing in i) is the
    earliest moment the i-th of them can free: a completed call's expiry, or for a call still
    in flight, its completing this instant (now + window). Slots free up at: now (the `limit -
    held` free ones; after a decrease that number can be negative, and the first grants then
    wait for the excess to expire), then in the order of `free_at`. Grant p takes the p-th of
    those; grant p + limit reuses grant p's slot, which frees at least `window` after p's grant.
    So grant p comes no earlier than a[p % limit] + (p // limit) * window.
    """
    rounds, index = divmod(position, limit)
    i = index - (limit - held)
    first = now if i < 0 else free_at(i)
    return max(now, first + rounds * window)


class _Waiter:
    __slots__ = ("deadline", "future", "ticket", "timer")

    def __init__(self, future: asyncio.Future[errors.BudgetExhausted | None], deadline: float):
        #: Resolved with None when granted, with the error when the deadline passed.
        self.future = future
        self.deadline = deadline
        self.ticket: Ticket[_Waiter] | None = None
        self.timer: TimerHandle | None = None


class LocalBudget:
    """The budget of one process: a sliding-window log of slot expiries plus a fair queue.

    State: `in_flight` (granted, not completed), the log of expiry times of completed calls
    (completion + window; appended at completion, so it is sorted without effort), the fair
    queue of waiters, and the effective limit. Granting, completing and expiring are amortized
    O(1), queueing O(log n); a waiter's deadline timer costs one O(log n) heap push in the event
    loop. The log never holds more than `limit` live entries.

    `max_in_flight` (default: no limit beyond `limit`) bounds the calls of this process in
    flight. `decrease_factor`, `recovery_rate`, `ceiling_factor` and `ceiling_recovery_time` are
    the AIMD parameters (`gateway.jobs.adaptive`); throttles within one `window` of the last
    decrease are one burst.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        max_in_flight: int | None = None,
        decrease_factor: float = DEFAULT_DECREASE_FACTOR,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_factor: float = DEFAULT_CEILING_FACTOR,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"Expected a limit of at least 1 call, received {limit}.")
        if window <= 0:
            raise ValueError(f"Expected a window of more than 0 seconds, received {window}.")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(
                f"Expected max_in_flight of at least 1 call, received {max_in_flight}."
            )
        self._limit = limit
        self._window = window
        self._max_in_flight = limit if max_in_flight is None else max_in_flight
        self._adaptive = AdaptiveLimit(
            AimdRule(
                limit,
                decrease_factor=decrease_factor,
                recovery_rate=recovery_rate,
                holdoff=window,
                ceiling_factor=ceiling_factor,
                ceiling_recovery_time=ceiling_recovery_time,
            )
        )
        self._clock = clock
        self._call_later = call_later
        self._in_flight = 0
        # Expiry times of completed calls' slots, sorted; entries before `_head` are expired.
        # A list with a moving head (compacted now and then) gives O(1) indexing, which the
        # earliest-grant estimate needs, and amortized O(1) expiry.
        self._expiries: list[float] = []
        self._head = 0
        self._queue: FairQueue[_Waiter] = FairQueue()
        self._wake: TimerHandle | None = None
        self._wake_at = math.inf

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> LocalBudget:
        """The QueryIProductionJob budget: `upstream_qps` calls per (1 s + margin), at most
        `upstream_concurrency` of them in flight."""
        return cls(
            settings.upstream_qps,
            settings.upstream_window,
            max_in_flight=settings.upstream_concurrency,
            clock=clock,
            call_later=call_later,
        )

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    def slot(
        self, deadline: float, *, key: Hashable | None = None
    ) -> AbstractAsyncContextManager[None]:
        return _Slot(self, deadline, key)

    async def throttled(self) -> None:
        now = self._clock()
        if self._adaptive.throttled(now):
            logger.warning(
                "The upstream throttled although the budget held: %d calls per %.3f s for now "
                "(of %d), recovering by %.1f per second up to a ceiling of %.1f, which creeps "
                "back to %d over minutes",
                self._adaptive.grants(now),
                self._window,
                self._limit,
                self._adaptive.rule.recovery_per_second,
                self._adaptive.ceiling(now),
                self._limit,
            )
        # A lower limit only delays grants: the armed timer fires early at worst, and re-arms.

    def snapshot(self) -> BudgetStatus:
        now = self._clock()
        # Read-only: expired entries are counted out without purging them.
        live_from = bisect.bisect_right(self._expiries, now, lo=self._head)
        limit = self._adaptive.grants(now)
        return BudgetStatus(
            limit=self._limit,
            effective_limit=limit,
            window=self._window,
            in_flight=self._in_flight,
            recent=len(self._expiries) - live_from,
            waiting=len(self._queue),
            next_free_in=self._earliest_grant(self._queue.keys, now, live_from, limit) - now,
            ceiling=self._adaptive.rule.grants(self._adaptive.ceiling(now)),
        )

    # --- the algorithm ----------------------------------------------------------------------

    async def _acquire(self, deadline: float, key: Hashable | None) -> None:
        now = self._clock()
        self._pump(now)
        if (
            not self._queue
            and self._held() < self._adaptive.grants(now)
            and self._in_flight < self._max_in_flight
        ):
            if now > deadline:
                raise errors.BudgetExhausted(retry_after=0.0)
            self._in_flight += 1
            return
        # The waiters the round-robin serves first, at the best limit it may have by then.
        best = self._adaptive.grants(deadline) if deadline < math.inf else self._limit
        eta = self._earliest_grant(self._queue.position(key), now, self._head, best)
        if eta > deadline:
            raise errors.BudgetExhausted(retry_after=eta - now)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), deadline)
        waiter.ticket = self._queue.push(key, waiter)
        waiter.timer = self._schedule(deadline - now, lambda: self._expire(waiter))
        self._arm(now)
        try:
            outcome = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.future.result() is None:
                    # Granted, but cancelled before it could use the slot: no call was made, so
                    # the slot goes back as if never taken.
                    self._in_flight -= 1
                    self._pump(self._clock())
            else:
                self._drop(waiter)
            raise
        if outcome is not None:
            raise outcome

    def _release(self) -> None:
        """A granted call completed (whatever its outcome): its slot is held `window` more."""
        now = self._clock()
        self._in_flight -= 1
        expiry = now + self._window
        if self._expiries and expiry < self._expiries[-1]:
            # Only a clock that went backwards gets here; keeping the log sorted errs on the
            # safe side (the slot is held a little longer).
            expiry = self._expiries[-1]
        self._expiries.append(expiry)
        # No budget slot was freed (an in-flight one became a recent one), but a waiter held
        # back by max_in_flight may go now, and the next expiry may need a timer.
        self._pump(now)

    def _held(self) -> int:
        return self._in_flight + len(self._expiries) - self._head

    def _purge(self, now: float) -> None:
        expiries = self._expiries
        head = self._head
        while head < len(expiries) and expiries[head] <= now:
            head += 1
        if head > 64 and head * 2 > len(expiries):
            del expiries[:head]
            head = 0
        self._head = head

    def _pump(self, now: float) -> None:
        """Purge expired slots, grant free ones round-robin, arm the timer."""
        self._purge(now)
        limit = self._adaptive.grants(now)
        queue = self._queue
        while queue and self._held() < limit and self._in_flight < self._max_in_flight:
            waiter = queue.pop()
            assert waiter is not None
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.future.done():
                continue  # its task was cancelled and has not run its handler yet: it leaves
            self._in_flight += 1
            waiter.future.set_result(None)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """Make sure a timer fires when the next grant may become possible, if someone waits:
        when enough held slots have expired for the effective limit, or when that limit next
        steps up. When the slots to wait for are in flight (or max_in_flight is reached) there
        is nothing to time: the next completion pumps."""
        if not self._queue or self._in_flight >= self._max_in_flight:
            return
        when = self._adaptive.next_step(now)
        excess = self._held() - self._adaptive.grants(now)  # slots that must free first
        if 0 <= excess < len(self._expiries) - self._head:
            when = min(when, self._expiries[self._head + excess])
        if when >= self._wake_at or math.isinf(when):
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        self._wake = self._schedule(max(0.0, when - now), self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._wake_at = math.inf
        self._pump(self._clock())

    def _expire(self, waiter: _Waiter) -> None:
        """A waiter's deadline passed before it was granted."""
        assert waiter.ticket is not None
        if not self._queue.discard(waiter.ticket):
            return
        if waiter.future.done():
            return  # cancelled at the same moment: it will see its cancellation, not this
        now = self._clock()
        # The hint for a retry: when a newcomer (a new request, so a key of its own) could be
        # served.
        live_from = bisect.bisect_right(self._expiries, now, lo=self._head)
        limit = self._adaptive.grants(now)
        retry_after = self._earliest_grant(self._queue.keys, now, live_from, limit) - now
        waiter.future.set_result(errors.BudgetExhausted(retry_after=retry_after))

    def _drop(self, waiter: _Waiter) -> None:
        assert waiter.ticket is not None
        self._queue.discard(waiter.ticket)
        if waiter.timer is not None:
            waiter.timer.cancel()

    def _earliest_grant(self, position: int, now: float, live_from: int, limit: int) -> float:
        """`earliest_grant` on this budget's log: completed calls' expiries from `live_from`
        on, then the in-flight calls as if they completed now."""
        expiries = self._expiries
        recent = len(expiries) - live_from

        def free_at(i: int) -> float:
            return expiries[live_from + i] if i < recent else now + self._window

        return earliest_grant(
            position,
            now=now,
            limit=limit,
            window=self._window,
            held=self._in_flight + recent,
            free_at=free_at,
        )

    def _schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return schedule(self._call_later, delay, callback)


def schedule(
    call_later: CallLater | None, delay: float, callback: Callable[[], None]
) -> TimerHandle:
    """A budget's timer: `call_later` when injected (tests), else the running loop's; an
    infinite delay (no deadline) gets a timer that never fires."""
    if math.isinf(delay):
        return _NeverFires()
    if call_later is not None:
        return call_later(delay, callback)
    return asyncio.get_running_loop().call_later(delay, callback)


class _NeverFires:
    """The timer of an infinite deadline."""

    def cancel(self) -> None:
        pass


class _Slot:
    """`async with budget.slot(deadline)`: one slot, held from entry to exit plus the window."""

    __slots__ = ("_budget", "_deadline", "_held", "_key")

    def __init__(self, budget: LocalBudget, deadline: float, key: Hashable | None) -> None:
        self._budget = budget
        self._deadline = deadline
        self._key = key
        self._held = False

    async def __aenter__(self) -> None:
        if self._held:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        await self._budget._acquire(self._deadline, self._key)
        self._held = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Success, error or cancellation alike: the call may have reached the upstream.
        self._held = False
        self._budget._release()
