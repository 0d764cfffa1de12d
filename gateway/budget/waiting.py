"""`SlotBudget`: fair, deadline-bound waiting for the slots of a ledger; every budget is one.

Waiters queue in a `FairQueue` (round-robin across keys, FIFO within a key; a newcomer never
takes a freed slot ahead of a waiter). One pump task asks the ledger for as many slots as
waiters may go (up to `batch` at a time, and within `max_in_flight` calls of this process in
flight) and hands them out in queue order; when the ledger is full it sleeps until the ledger
says a slot may free, or until a release frees one. Since the ledger is asked only when a slot
is handed out, whatever the ledger decides (which side of a failover serves, say) is decided at
the grant, never when the waiter started waiting.

A caller gets `BudgetExhausted` at once when the ledger's lower bound puts its earliest grant
after its deadline, and when its deadline passes while it waits. A waiter cancelled before its
grant consumes nothing; one cancelled after (before it could use its slot) gives the slot back
unused. Releases run to their end even when the releasing task is cancelled, and `aclose`
waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from gateway import errors
from gateway.budget.fair_queue import FairQueue, Ticket
from gateway.budget.ledger import Ledger
from gateway.budget.pacing import GrantPacer
from gateway.budget.protocol import NO_OBSERVER, BudgetObserver, BudgetStatus
from gateway.budget.timers import CallLater, TimerHandle, schedule
from gateway.shared.backend import BackendUnavailable

__all__ = ["SlotBudget"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Shortest sleep of the pump between two answers without the slots it asked for.
_MIN_NAP = 0.001


class _Grant(Generic[T]):
    """A waiter's future resolves with one of these (or with the error it must raise)."""

    __slots__ = ("token",)

    def __init__(self, token: T) -> None:
        self.token = token


class _Waiter(Generic[T]):
    __slots__ = ("deadline", "future", "ticket", "timer")

    def __init__(self, future: asyncio.Future[_Grant[T] | Exception], deadline: float) -> None:
        self.future = future
        self.deadline = deadline
        self.ticket: Ticket[_Waiter[T]] | None = None
        self.timer: TimerHandle | None = None


class SlotBudget(Generic[T]):
    """A `Budget` over `ledger`; see the module docstring.

    `clock` is the clock of the deadlines and of the ledger; `call_later` schedules on it
    (None: the running loop's). `max_in_flight` bounds this process's calls in flight.
    `observer` is told how each wait ended and of each throttle. With `paced`, grants are
    spread once demand exceeds the budget (`gateway.budget.pacing`).
    """

    def __init__(
        self,
        ledger: Ledger[T],
        *,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
        batch: int = 32,
        observer: BudgetObserver = NO_OBSERVER,
        paced: bool = False,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(
                f"Expected max_in_flight of at least 1 call, received {max_in_flight}."
            )
        self._ledger = ledger
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._call_later = call_later
        self._batch = batch
        self._observer = observer
        self._pacer = GrantPacer(ledger.limit, ledger.window, now=clock()) if paced else None
        self._queue: FairQueue[_Waiter[T]] = FairQueue()
        # Calls granted and not completed; slots being asked for (counted against
        # max_in_flight while the ledger answers).
        self._in_flight = 0
        self._asking = 0
        self._pump_task: asyncio.Task[None] | None = None
        self._nap: asyncio.Future[None] | None = None
        self._closed = False
        # Releases and give-backs under way; the loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ledger(self) -> Ledger[T]:
        return self._ledger

    @property
    def limit(self) -> int:
        return self._ledger.limit

    @property
    def window(self) -> float:
        return self._ledger.window

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    def slot(
        self, deadline: float, *, key: Hashable | None = None
    ) -> AbstractAsyncContextManager[None]:
        return _Slot(self, deadline, key)

    async def throttled(self) -> None:
        self._observer.throttled()
        await self._ledger.throttled()

    def status(self) -> BudgetStatus:
        now = self._clock()
        ledger = self._ledger.status(now)
        return BudgetStatus(
            limit=ledger.limit,
            effective_limit=ledger.effective_limit,
            window=ledger.window,
            in_flight=self._in_flight,
            held=ledger.held,
            waiting=len(self._queue),
            next_free_in=self._ledger.earliest(self._queue.keys, now, now) - now,
            ceiling=ledger.ceiling,
        )

    def close(self) -> None:
        self._closed = True
        for waiter in self._drain():
            waiter.future.set_result(errors.ShuttingDown())
        self._wake()

    async def aclose(self) -> None:
        self.close()
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
        await self.released()
        await self._ledger.aclose()

    async def released(self) -> None:
        """Return once every release and give-back under way has reached the ledger."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- acquiring --------------------------------------------------------------------------

    async def _acquire(self, deadline: float, key: Hashable | None) -> T:
        started = self._clock()
        try:
            token = await self._wait_for_slot(deadline, key)
        except errors.BudgetExhausted:
            self._observer.refused("exhausted", self._clock() - started)
            raise
        except errors.ShuttingDown:
            self._observer.refused("shutting_down", self._clock() - started)
            raise
        self._observer.granted(self._clock() - started)
        return token

    async def _wait_for_slot(self, deadline: float, key: Hashable | None) -> T:
        if self._closed:
            raise errors.ShuttingDown()
        now = self._clock()
        if now > deadline:
            raise errors.BudgetExhausted(retry_after=0.0)
        eta = self._ledger.earliest(self._queue.position(key), now, deadline)
        if eta > deadline:
            raise errors.BudgetExhausted(retry_after=eta - now)
        waiter: _Waiter[T] = _Waiter(asyncio.get_running_loop().create_future(), deadline)
        waiter.ticket = self._queue.push(key, waiter)
        waiter.timer = schedule(self._call_later, deadline - now, lambda: self._expire(waiter))
        self._start()
        try:
            outcome = await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled():
                granted = future.result()
                if isinstance(granted, _Grant):
                    # Granted, but cancelled before it could use the slot: no call was made.
                    self._give_back([granted.token])
            else:
                self._leave(waiter)
            raise
        if isinstance(outcome, Exception):
            raise outcome
        return outcome.token

    def _room(self) -> int:
        return self._max_in_flight - self._in_flight - self._asking

    def _start(self) -> None:
        """Run the pump if waiters may go and it is not running."""
        if self._pump_task is None and self._queue and self._room() > 0 and not self._closed:
            # In a context of its own: the pump serves every request, so it must not carry the
            # one that started it (its request id in log lines, its trace in Redis spans).
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name="budget pump", context=self._observer.pump_context()
            )

    def _wake(self) -> None:
        """End the pump's nap now: a slot may have freed, or nobody waits any more."""
        if self._nap is not None and not self._nap.done():
            self._nap.set_result(None)

    async def _pump(self) -> None:
        """Ask the ledger for slots while waiters may go; nap while it is full."""
        try:
            while not self._closed:
                want = min(len(self._queue), self._room(), self._batch)
                if want <= 0:
                    if self._pacer is not None and not self._queue:
                        self._pacer.idle()
                    return
                held_back = False
                if self._pacer is not None:
                    now = self._clock()
                    paced = min(want, self._pacer.allowed(now))
                    if paced <= 0:
                        self._pacer.held_back()
                        await self._nap_till(self._pacer.next_token_at(now))
                        continue
                    held_back, want = paced < want, paced
                self._asking = want
                try:
                    taken = await self._ledger.take(want)
                finally:
                    self._asking = 0
                self._in_flight += len(taken.tokens)
                self._hand_out(taken.tokens)
                if self._pacer is not None:
                    self._pacer.spend(len(taken.tokens), self._clock())
                    if held_back or len(taken.tokens) < want:
                        self._pacer.held_back()
                if len(taken.tokens) < want:
                    await self._nap_till(taken.retry_at)
        except Exception as exc:  # (cancellation is a BaseException: it goes on up)
            if not isinstance(exc, BackendUnavailable):
                logger.exception("The budget's pump failed")
            # Nobody may hang on a budget that cannot grant: every waiter gets the error, each
            # its own instance (one raised in many tasks would collect all their tracebacks).
            for waiter in self._drain():
                waiter.future.set_result(_copy(exc))
        finally:
            self._pump_task = None

    async def _nap_till(self, when: float) -> None:
        delay = max(_MIN_NAP, when - self._clock())
        self._nap = nap = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not nap.done():
                nap.set_result(None)

        timer = schedule(self._call_later, delay, wake)
        try:
            await nap
        finally:
            timer.cancel()
            self._nap = None

    def _hand_out(self, tokens: Sequence[T]) -> None:
        """Grant `tokens` to waiters in queue order; give back those nobody takes."""
        for index, token in enumerate(tokens):
            waiter = self._next_waiter()
            if waiter is None:
                self._give_back(tokens[index:])
                return
            waiter.future.set_result(_Grant(token))

    def _next_waiter(self) -> _Waiter[T] | None:
        while (waiter := self._queue.pop()) is not None:
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.future.done():
                return waiter
            # Its task was cancelled and has not run its handler yet: it leaves.
        return None

    def _expire(self, waiter: _Waiter[T]) -> None:
        """A waiter's deadline passed before it was granted."""
        assert waiter.ticket is not None
        if not self._queue.discard(waiter.ticket):
            return
        if not self._queue:
            self._wake()  # nothing to wait for: let the pump end now
        if waiter.future.done():
            return  # cancelled at the same moment: it will see its cancellation, not this
        now = self._clock()
        # The hint for a retry: when a newcomer (a new request, a key of its own) could go.
        retry_after = self._ledger.earliest(self._queue.keys, now, now) - now
        waiter.future.set_result(errors.BudgetExhausted(retry_after=retry_after))

    def _leave(self, waiter: _Waiter[T]) -> None:
        assert waiter.ticket is not None
        self._queue.discard(waiter.ticket)
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not self._queue:
            self._wake()

    def _drain(self) -> list[_Waiter[T]]:
        waiters = []
        while (waiter := self._next_waiter()) is not None:
            waiters.append(waiter)
        return waiters

    # --- releasing --------------------------------------------------------------------------

    async def _complete(self, token: T) -> None:
        """The call made in `token`'s slot completed: tell the ledger, to the end even if the
        caller is cancelled meanwhile."""
        self._in_flight -= 1
        release = self._background(self._ledger.finish(token, used=True))
        self._start()  # a waiter held back by max_in_flight may go
        await asyncio.shield(release)

    def _give_back(self, tokens: Sequence[T]) -> None:
        """Slots granted and not used: back to the ledger at once, in the background."""
        for token in tokens:
            self._in_flight -= 1
            give_back = self._background(self._ledger.finish(token, used=False))
            give_back.add_done_callback(self._given_back)

    def _given_back(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("Giving back an unused budget slot failed (its lease frees it): %s", exc)
        self._wake()
        self._start()

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Seen here too, in case its caller was cancelled and never looks.
            logger.debug("A budget release failed: %s", exc)


def _copy(exc: Exception) -> Exception:
    if isinstance(exc, BackendUnavailable):
        copy = BackendUnavailable(exc.backend, exc.reason)
        copy.__cause__ = exc.__cause__
        return copy
    return exc  # a bug: shared as it is, logged once above


class _Slot(Generic[T]):
    """`async with budget.slot(deadline, key=k)`: one slot, held from entry to exit plus the
    window."""

    __slots__ = ("_budget", "_deadline", "_entered", "_key", "_token")

    def __init__(self, budget: SlotBudget[T], deadline: float, key: Hashable | None) -> None:
        self._budget = budget
        self._deadline = deadline
        self._key = key
        self._entered = False
        self._token: _Grant[T] | None = None

    async def __aenter__(self) -> None:
        if self._entered:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        self._entered = True
        self._token = _Grant(await self._budget._acquire(self._deadline, self._key))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self._token = self._token, None
        if held is None:
            return
        try:
            # Success, error or cancellation alike: the call may have reached the upstream.
            await self._budget._complete(held.token)
        except BackendUnavailable as failure:
            if exc_type is not None and not issubclass(exc_type, Exception):
                # Cancelled (or exiting): that must go on; a shared slot's lease frees it.
                logger.warning("Releasing a budget slot failed: %s", failure.reason)
                return
            raise
