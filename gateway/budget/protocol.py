"""`Budget`: what the fetcher asks of an upstream call budget, `BudgetStatus`,
`BudgetObserver`, what a budget tells whoever watches it (metrics, traces), and
`report_throttled`, how a caller of the upstream tells a budget it was throttled."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from gateway.shared.backend import BackendUnavailable

__all__ = ["NO_OBSERVER", "Budget", "BudgetObserver", "BudgetStatus", "report_throttled"]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's state at one moment, for health checks and load-shedding hints.

    For a shared budget, `in_flight` and `waiting` are this process's, and `held` and
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
    #: Slots held: calls in flight and completed calls whose window is not over.
    held: int
    #: Callers queued for a slot.
    waiting: int
    #: Lower bound on the seconds before a caller arriving now, with a key of its own, could
    #: be granted a slot (0: free now).
    next_free_in: float
    #: Calls per window the effective limit may climb back to for now: `limit`, or less while
    #: the ceiling learned from a throttle creeps back (`gateway.budget.aimd`).
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
    - a caller cancelled while waiting consumes nothing;
    - after `close()`, waiters and newcomers get `ShuttingDown` at once.
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

    def status(self) -> BudgetStatus: ...

    def close(self) -> None:
        """Grant nothing more: every waiter, and every caller from now on, gets `ShuttingDown`."""
        ...

    async def aclose(self) -> None:
        """`close()`, then wait for the releases under way (so that a shared budget holds
        nothing for this process once it returns)."""
        ...


class BudgetObserver(Protocol):
    """Told by a budget of each wait for a slot as it ends, and of each throttled call. Called
    on the event loop, in the task of the caller that waited; must not raise nor block."""

    def granted(self, waited: float) -> None:
        """A caller got a slot after `waited` seconds (on the budget's clock)."""
        ...

    def refused(self, reason: str, waited: float) -> None:
        """A caller got no slot after `waited` seconds: `reason` is "exhausted"
        (BudgetExhausted) or "shutting_down"."""
        ...

    def throttled(self) -> None:
        """A call made in a slot was throttled by the upstream."""
        ...

    def pump_context(self) -> contextvars.Context:
        """A new context for the task that asks the ledger for slots: it serves every
        request, so it must carry none of them (their request ids, their traces)."""
        ...


class _Unobserved:
    __slots__ = ()

    def granted(self, waited: float) -> None:
        pass

    def refused(self, reason: str, waited: float) -> None:
        pass

    def throttled(self) -> None:
        pass

    def pump_context(self) -> contextvars.Context:
        return contextvars.Context()


#: The observer of a budget nobody watches.
NO_OBSERVER: BudgetObserver = _Unobserved()


async def report_throttled(budget: Budget, log: logging.Logger) -> None:
    """Tell `budget` that a call in its slot was throttled; a budget that cannot be told (its
    backend is down) is said in a warning on `log`, never raised. The report is advice:
    without it the budget keeps its rate, and a retry still goes through the budget. The
    caller must get the upstream's answer, not this."""
    try:
        await budget.throttled()
    except BackendUnavailable as exc:
        log.warning("Could not report upstream throttling to the budget: %s", exc.reason)
