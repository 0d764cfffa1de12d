"""`LocalLedger` and `LocalBudget`: the budget of one process.

State: the calls in flight and a log of the expiry times of completed calls' slots (completion
+ window; appended at completion, so sorted without effort). Granting, completing and expiring
are amortized O(1); the log never holds more than `limit` live entries.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable

from gateway.budget.actions import QUERY_JOB, limit_of
from gateway.budget.aimd import (
    DEFAULT_CEILING_FACTOR,
    DEFAULT_CEILING_RECOVERY_TIME,
    DEFAULT_DECREASE_FACTOR,
    DEFAULT_RECOVERY_RATE,
    AdaptiveLimit,
    AimdRule,
)
from gateway.budget.ledger import LedgerStatus, Taken, earliest_grant
from gateway.budget.protocol import NO_OBSERVER, BudgetObserver
from gateway.budget.timers import CallLater
from gateway.budget.waiting import SlotBudget
from gateway.settings import GatewaySettings

__all__ = ["LocalBudget", "LocalLedger"]

logger = logging.getLogger(__name__)


class LocalLedger:
    """The slots of one process (a `Ledger` whose tokens are all None): never suspends.

    `decrease_factor`, `recovery_rate`, `ceiling_factor` and `ceiling_recovery_time` are the
    AIMD parameters (`gateway.budget.aimd`); throttles within one `window` of the last decrease
    are one burst.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        decrease_factor: float = DEFAULT_DECREASE_FACTOR,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_factor: float = DEFAULT_CEILING_FACTOR,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"Expected a limit of at least 1 call, received {limit}.")
        if window <= 0:
            raise ValueError(f"Expected a window of more than 0 seconds, received {window}.")
        self._limit = limit
        self._window = window
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
        self._in_flight = 0
        # Expiry times of completed calls' slots, sorted; entries before `_head` are expired.
        # A list with a moving head (compacted now and then) gives O(1) indexing, which the
        # lower bound needs, and amortized O(1) expiry.
        self._expiries: list[float] = []
        self._head = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    def take_now(self, want: int) -> Taken[None]:
        """`take`, for callers that must not suspend."""
        now = self._clock()
        self._purge(now)
        granted = max(0, min(want, self._adaptive.grants(now) - self._held()))
        self._in_flight += granted
        retry_at = now if granted == want else self._next_free(now)
        return Taken((None,) * granted, retry_at)

    async def take(self, want: int) -> Taken[None]:
        return self.take_now(want)

    def finish_now(self, *, used: bool) -> None:
        """`finish`, for callers that must not suspend."""
        self._in_flight -= 1
        if not used:
            return  # no call was made: the slot goes back as if never taken
        expiry = self._clock() + self._window
        if self._expiries and expiry < self._expiries[-1]:
            # Only a clock that went backwards gets here; keeping the log sorted errs on the
            # safe side (the slot is held a little longer).
            expiry = self._expiries[-1]
        self._expiries.append(expiry)

    async def finish(self, token: None, *, used: bool) -> None:
        self.finish_now(used=used)

    def adopt(self, calls: int) -> None:
        """Count `calls` granted elsewhere (and still in flight) as this ledger's own: each
        holds a slot here until `finish_now` plus the window."""
        self._in_flight += calls

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

    def earliest(self, position: int, now: float, horizon: float) -> float:
        """Completed calls' expiries from the first live one on, then the calls in flight as
        if they completed now."""
        limit = self._adaptive.grants(horizon) if math.isfinite(horizon) else self._limit
        expiries = self._expiries
        live_from = bisect.bisect_right(expiries, now, lo=self._head)
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

    def status(self, now: float) -> LedgerStatus:
        live_from = bisect.bisect_right(self._expiries, now, lo=self._head)
        return LedgerStatus(
            limit=self._limit,
            effective_limit=self._adaptive.grants(now),
            window=self._window,
            held=self._in_flight + len(self._expiries) - live_from,
            ceiling=self._adaptive.rule.grants(self._adaptive.ceiling(now)),
        )

    async def aclose(self) -> None:
        pass

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

    def _next_free(self, now: float) -> float:
        """When a grant may next be possible: when enough held slots have expired for the
        effective limit, or when that limit next steps up. Completed calls free first, in
        expiry order; a call in flight frees no earlier than `window` from now (had it
        completed now), so that is when to look again."""
        when = self._adaptive.next_step(now)
        excess = self._held() - self._adaptive.grants(now)  # slots that must free first
        recent = len(self._expiries) - self._head
        if 0 <= excess < recent:
            when = min(when, self._expiries[self._head + excess])
        elif excess >= recent:
            when = min(when, now + self._window)
        return when


class LocalBudget(SlotBudget[None]):
    """A `Budget` of one process: a `LocalLedger` behind the fair, deadline-bound waiting.

    `max_in_flight` (default: `limit`) bounds the calls of this process in flight.
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
        observer: BudgetObserver = NO_OBSERVER,
        paced: bool = False,
    ) -> None:
        ledger = LocalLedger(
            limit,
            window,
            decrease_factor=decrease_factor,
            recovery_rate=recovery_rate,
            ceiling_factor=ceiling_factor,
            ceiling_recovery_time=ceiling_recovery_time,
            clock=clock,
        )
        super().__init__(
            ledger,
            max_in_flight=limit if max_in_flight is None else max_in_flight,
            clock=clock,
            call_later=call_later,
            observer=observer,
            paced=paced,
        )

    @classmethod
    def from_settings(
        cls,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
        observer: BudgetObserver = NO_OBSERVER,
        operation: str = QUERY_JOB,
    ) -> LocalBudget:
        """The budget of `operation` (QueryIProductionJob: `upstream_qps`, SubmitIProductionJob:
        `submit_qps`) calls per (1 s + margin), at most `upstream_concurrency` of them in
        flight, paced (`gateway.budget.pacing`)."""
        return cls(
            limit_of(settings, operation),
            settings.upstream_window,
            max_in_flight=settings.upstream_concurrency,
            clock=clock,
            call_later=call_later,
            observer=observer,
            paced=True,
        )
