"""`Ledger`: where a budget's slots are counted, and the lower bound every ledger shares.

A ledger knows which slots are held and grants new ones; it never waits. The waiting (fair,
deadline-bound, shared by every ledger) is `gateway.budget.waiting.SlotBudget`. Ledgers:
`LocalLedger` (one process), `RedisLedger` (a fleet, in Redis) and `FailoverLedger` (Redis
while it answers, else a local share; the side chosen at each grant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Ledger", "LedgerStatus", "Taken", "earliest_grant"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Taken(Generic[T]):
    """A ledger's answer to `take`: the slots granted, one token each, and when to ask again."""

    tokens: tuple[T, ...]
    #: When asking for more may succeed (on the budget's clock), if nothing is given back
    #: meanwhile; a call in flight counts as freeing `window` after this answer at the
    #: earliest, so the time is finite whenever a slot is held.
    retry_at: float


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """What a ledger knows of its slots at one moment (for `BudgetStatus`)."""

    limit: int
    effective_limit: int
    window: float
    #: Slots held: calls in flight and completed calls whose window is not over (a shared
    #: ledger's: the fleet's, as last seen).
    held: int
    ceiling: int | None


class Ledger(Protocol[T]):
    """The slots of a budget. Every ledger keeps the completion-time rule: at most the
    effective limit of slots are held at any moment, and a slot is held from its grant until
    `window` seconds after its call completed (`finish(used=True)`), or until `finish(used=False)`
    when no call was made in it.

    A shared ledger may raise `gateway.shared.backend.BackendUnavailable` from `take`, `finish`
    and `throttled` when its backend does not answer.
    """

    @property
    def limit(self) -> int: ...

    @property
    def window(self) -> float: ...

    async def take(self, want: int) -> Taken[T]:
        """Grant up to `want` slots now (none when full)."""
        ...

    async def finish(self, token: T, *, used: bool) -> None:
        """The slot of `token` is done with: its call completed (`used`), or none was made."""
        ...

    async def throttled(self) -> None:
        """A call made in a slot was throttled by the upstream: lower the effective limit."""
        ...

    def earliest(self, position: int, now: float, horizon: float) -> float:
        """Lower bound on when the grant `position` grants from now can happen, with the
        effective limit as it may be at `horizon` (it only grows between throttles)."""
        ...

    def status(self, now: float) -> LedgerStatus: ...

    async def aclose(self) -> None:
        """Let the work under way end (releases already sent); the ledger grants nothing after."""
        ...


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
    earliest moment the i-th of them can free. Slots free up at: now (the `limit - held` free
    ones; after a decrease that number can be negative, and the first grants then wait for the
    excess to expire), then in the order of `free_at`. Grant p takes the p-th of those; grant
    p + limit reuses grant p's slot, which frees at least `window` after p's grant. So grant p
    comes no earlier than a[p % limit] + (p // limit) * window.
    """
    rounds, index = divmod(position, limit)
    i = index - (limit - held)
    first = now if i < 0 else free_at(i)
    return max(now, first + rounds * window)
