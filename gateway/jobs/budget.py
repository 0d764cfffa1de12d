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

Waiting is fair: callers that cannot be served at once queue in FIFO order, and a caller that
arrives later never takes a slot before an earlier one. A caller passes an absolute `deadline`;
if the earliest moment it could possibly be served is after that deadline, it gets
`BudgetExhausted` at once instead of waiting in vain (load shedding), and if the deadline passes
while it waits, it gets `BudgetExhausted` then. A waiter that is cancelled leaves the queue and
consumes nothing.

Time is injected, as in aiolimiter: `clock` reads the time and `call_later` schedules the
budget's timers (a waiter's deadline, the moment the oldest held slot frees). By default they are
`time.monotonic` and the running loop's `call_later`; tests pass a manual clock whose timers fire
when the test moves time, so they never sleep. The budget never trusts a timer to be exact: when
one fires it reads the clock again and re-arms if it fired early.

`Budget` is the protocol the fetcher uses; `LocalBudget` serves one process. A Redis
implementation with the same semantics (one atomic script over a sorted set of slot expiries,
server time) can be added behind the same protocol; the behaviour tests take the budget as a
fixture for that reason.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from gateway import errors
from gateway.settings import GatewaySettings


class TimerHandle(Protocol):
    """What `call_later` returns: something that can be cancelled (as `asyncio.TimerHandle`)."""

    def cancel(self) -> None: ...


#: Schedules `callback()` after `delay` seconds of the budget's clock (as `loop.call_later`).
CallLater = Callable[[float, Callable[[], None]], TimerHandle]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's state at one moment, for health checks and load-shedding hints."""

    #: Calls allowed per window.
    limit: int
    #: Seconds a completed call keeps its slot.
    window: float
    #: Calls granted and not yet completed.
    in_flight: int
    #: Completed calls whose slot is still held (completed less than `window` ago).
    recent: int
    #: Callers queued for a slot.
    waiting: int
    #: Lower bound on the seconds a caller arriving now would wait for a slot (0: free now).
    next_free_in: float


class Budget(Protocol):
    """An upstream call budget. Usage: `async with budget.slot(deadline): await call()`.

    Guarantees of every implementation:
    - at most `limit` slots are held at any time; a slot is held from its grant until `window`
      seconds after the call completes (the body exits, by return, exception or cancellation);
    - callers are served in arrival order;
    - `slot(deadline)` raises `BudgetExhausted` without waiting when the earliest possible grant
      is after `deadline`, and when `deadline` passes while waiting;
    - a caller cancelled while waiting consumes nothing.
    """

    @property
    def limit(self) -> int: ...

    def slot(self, deadline: float) -> AbstractAsyncContextManager[None]:
        """A context manager that holds one slot while its body runs. `deadline` is an
        absolute time on the budget's clock."""
        ...

    def snapshot(self) -> BudgetStatus: ...


class _Waiter:
    __slots__ = ("deadline", "future", "live", "timer")

    def __init__(self, future: asyncio.Future[errors.BudgetExhausted | None], deadline: float):
        #: Resolved with None when granted, with the error when the deadline passed.
        self.future = future
        self.deadline = deadline
        self.live = True
        self.timer: TimerHandle | None = None


class LocalBudget:
    """The budget of one process: a sliding-window log of slot expiries plus a FIFO of waiters.

    State: `in_flight` (granted, not completed), the log of expiry times of completed calls
    (completion + window; appended at completion, so it is sorted without effort), and the queue.
    Granting, completing and expiring are amortized O(1); a waiter's deadline timer costs one
    O(log n) heap push in the event loop. The log never holds more than `limit` live entries.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"Expected a limit of at least 1 call, received {limit}.")
        if window <= 0:
            raise ValueError(f"Expected a window of more than 0 seconds, received {window}.")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._call_later = call_later
        self._in_flight = 0
        # Expiry times of completed calls' slots, sorted; entries before `_head` are expired.
        # A list with a moving head (compacted now and then) gives O(1) indexing, which the
        # earliest-grant estimate needs, and amortized O(1) expiry.
        self._expiries: list[float] = []
        self._head = 0
        # FIFO of waiters; cancelled or expired ones stay until they reach the head (lazy
        # deletion keeps removal O(1)), `_waiting` counts the live ones.
        self._waiters: deque[_Waiter] = deque()
        self._waiting = 0
        self._wake: TimerHandle | None = None

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> LocalBudget:
        """The QueryIProductionJob budget: `upstream_qps` calls per (1 s + margin)."""
        return cls(
            settings.upstream_qps,
            1.0 + settings.upstream_window_margin,
            clock=clock,
            call_later=call_later,
        )

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def slot(self, deadline: float) -> AbstractAsyncContextManager[None]:
        return _Slot(self, deadline)

    def snapshot(self) -> BudgetStatus:
        now = self._clock()
        # Read-only: expired entries are counted out without purging them.
        live_from = bisect.bisect_right(self._expiries, now, lo=self._head)
        recent = len(self._expiries) - live_from
        return BudgetStatus(
            limit=self._limit,
            window=self._window,
            in_flight=self._in_flight,
            recent=recent,
            waiting=self._waiting,
            next_free_in=self._earliest_grant(self._waiting, now, live_from) - now,
        )

    # --- the algorithm ----------------------------------------------------------------------

    async def _acquire(self, deadline: float) -> None:
        now = self._clock()
        self._pump(now)
        if self._waiting == 0 and self._held() < self._limit:
            if now > deadline:
                raise errors.BudgetExhausted(retry_after=0.0)
            self._in_flight += 1
            return
        # Everyone already queued goes first: this caller needs the slot after theirs.
        eta = self._earliest_grant(self._waiting, now, self._head)
        if eta > deadline:
            raise errors.BudgetExhausted(retry_after=eta - now)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), deadline)
        self._waiters.append(waiter)
        self._waiting += 1
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
        # No slot was freed (an in-flight one became a recent one), but the head waiter may now
        # have an expiry to wait for.
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
        """Purge expired slots, grant free ones to the queue's head in order, arm the timer."""
        self._purge(now)
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if head.future.done():
                # Its task was cancelled and has not run its handler yet: it leaves now.
                self._drop(head)
            if not head.live:
                waiters.popleft()
                continue
            if self._held() >= self._limit:
                break
            waiters.popleft()
            head.live = False
            self._waiting -= 1
            if head.timer is not None:
                head.timer.cancel()
            self._in_flight += 1
            head.future.set_result(None)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """Make sure a timer fires when the oldest held slot frees, if someone waits for it.
        When every held slot is in flight there is nothing to time: the next completion pumps."""
        if self._wake is not None or self._waiting == 0 or self._head >= len(self._expiries):
            return
        delay = max(0.0, self._expiries[self._head] - now)
        self._wake = self._schedule(delay, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._pump(self._clock())

    def _expire(self, waiter: _Waiter) -> None:
        """A waiter's deadline passed before it was granted."""
        if not waiter.live:
            return
        self._drop(waiter)
        if waiter.future.done():
            return  # cancelled at the same moment: it will see its cancellation, not this
        now = self._clock()
        # The hint for a retry: when a newcomer could be served, i.e. after the live queue.
        live_from = bisect.bisect_right(self._expiries, now, lo=self._head)
        retry_after = self._earliest_grant(self._waiting, now, live_from) - now
        waiter.future.set_result(errors.BudgetExhausted(retry_after=retry_after))

    def _drop(self, waiter: _Waiter) -> None:
        if not waiter.live:
            return
        waiter.live = False
        self._waiting -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()

    def _earliest_grant(self, position: int, now: float, live_from: int) -> float:
        """Lower bound on when the caller with `position` live waiters ahead gets a slot.

        Slots free up at: now (the free ones), the logged expiries in order, then now + window
        for each in-flight call (as if it completed this instant). Waiter p takes the p-th of
        those; waiter p + limit reuses waiter p's slot, which frees at least `window` after p's
        grant. So waiter p's grant is at least a[p % limit] + (p // limit) * window.
        """
        rounds, index = divmod(position, self._limit)
        recent = len(self._expiries) - live_from
        free = self._limit - self._in_flight - recent
        if index < free:
            first = now
        elif index - free < recent:
            first = self._expiries[live_from + index - free]
        else:
            first = now + self._window
        return max(now, first + rounds * self._window)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        if math.isinf(delay):
            return _NeverFires()
        if self._call_later is not None:
            return self._call_later(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)


class _NeverFires:
    """The timer of an infinite deadline."""

    def cancel(self) -> None:
        pass


class _Slot:
    """`async with budget.slot(deadline)`: one slot, held from entry to exit plus the window."""

    __slots__ = ("_budget", "_deadline", "_held")

    def __init__(self, budget: LocalBudget, deadline: float) -> None:
        self._budget = budget
        self._deadline = deadline
        self._held = False

    async def __aenter__(self) -> None:
        if self._held:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        await self._budget._acquire(self._deadline)
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
