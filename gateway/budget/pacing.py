"""`GrantPacer`: once demand exceeds the budget, slots that free together are granted spread out.

The completion-time rule lets a burst of `limit` calls go at once, and a slot comes back one
window after its call completed. Under sustained demand the calls of the first burst complete
close together, their slots free close together, and the next `limit` calls leave in a lump
again, lap after lap. A lump is served one call after another by whatever is serial on the
way (the gateway's event loop reading the answers, the upstream's front end): the last call of
the lump waits for the others, and that wait lies inside the slot each call holds, so every lap
takes longer than window + latency, and fewer calls fit in a second than the rule allows.

So the pump asks the pacer too. Its tokens refill at `limit / window` per second (the rule's own
rate at zero latency: pacing never lowers the rate the rule allows) up to a capacity: `limit`
while nobody waits, so a request that finds the budget idle still gets the whole burst at once;
`steady_burst` (a tenth of the limit) from the moment a waiter is held back (by the ledger or by
the pacer), so that slots that free together are granted a few at a time, at the rule's rate,
and the calls of later laps are spread over the whole window instead of lumped. The pacer only
ever delays a grant, never adds one: the ledger still decides, and the account stays as safe.
"""

from __future__ import annotations

__all__ = ["GrantPacer"]

#: Tokens short of a whole one by less than this count as whole: a refill computed from a time
#: difference falls short of 1.0 by a rounding error, and a timer set for the rest would fire
#: at the same instant, again and again.
_ROUNDING = 1e-9


class GrantPacer:
    """Tokens for grants (see the module docstring); times are on the budget's clock."""

    __slots__ = ("_at", "_burst", "_capacity", "_rate", "_steady_burst", "_tokens")

    def __init__(self, limit: int, window: float, *, now: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"Expected a limit >= 1 and a window > 0, received {limit}, {window}.")
        self._rate = limit / window
        self._burst = float(limit)
        self._steady_burst = float(max(1, limit // 10))
        self._capacity = self._burst
        self._tokens = self._burst
        self._at = now

    def allowed(self, now: float) -> int:
        """Grants that may go now."""
        self._refill(now)
        return int(self._tokens + _ROUNDING)

    def next_token_at(self, now: float) -> float:
        """When the next grant may go (now, when one may already)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        return now + (missing / self._rate if missing > _ROUNDING else 0.0)

    def spend(self, grants: int, now: float) -> None:
        self._refill(now)
        self._tokens -= grants

    def held_back(self) -> None:
        """A waiter could not go: spread the grants from now on."""
        self._capacity = self._steady_burst
        self._tokens = min(self._tokens, self._capacity)

    def idle(self) -> None:
        """Nobody waits: let the tokens refill to a whole burst again."""
        self._capacity = self._burst

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = max(self._at, now)
