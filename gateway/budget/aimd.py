"""AIMD with a learned ceiling: how a budget lowers its rate when the upstream throttles, and
how it climbs back (`docs/architecture.md` section 2.3 says why these numbers).

t seconds after a throttle that left the effective limit at `base` and the ceiling at `c`, the
effective limit is `min(limit, base + recovery_rate * limit * t, c + limit / 2 * (t / T) ** 3)`
(T = `ceiling_recovery_time`); with no throttle, `limit`. A throttle multiplies the effective
limit by `decrease_factor` and sets the ceiling at `ceiling_factor` of it; a throttle within
`holdoff` of the last decrease is the same burst. Grants use the integer part (at least 1).
`AimdRule` is the arithmetic; `AdaptiveLimit` holds one process's state; the Redis ledger stores
the fleet's state and computes with the same `AimdRule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_CEILING_FACTOR",
    "DEFAULT_CEILING_RECOVERY_TIME",
    "DEFAULT_DECREASE_FACTOR",
    "DEFAULT_RECOVERY_RATE",
    "AdaptiveLimit",
    "AimdRule",
    "Decrease",
]

#: The effective limit is multiplied by this on a throttle.
DEFAULT_DECREASE_FACTOR: Final = 0.5
#: Share of the configured limit regained per second after a decrease (up to the ceiling).
DEFAULT_RECOVERY_RATE: Final = 0.05
#: The ceiling is set at this share of the effective limit that was throttled.
DEFAULT_CEILING_FACTOR: Final = 0.9
#: Seconds for a ceiling to regain half the configured limit.
DEFAULT_CEILING_RECOVERY_TIME: Final = 300.0

# Integer parts are taken with this much slack, so that 49.999999999 (a float sum that means
# 50) grants 50.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Decrease:
    """The state a throttle leaves: the effective limit and the ceiling right after it."""

    base: float
    ceiling: float


@dataclass(frozen=True, slots=True)
class AimdRule:
    """The AIMD arithmetic for one configured `limit`; see the module docstring.

    The state is the last decrease (`Decrease`, None if none) and `since`, the seconds elapsed
    since it. Guarantees: `effective` is between 1 and `limit`, never above the ceiling, and
    does not decrease as `since` grows; it is `limit` again once both the climb and the
    ceiling's creep reach it (`recovered_in`).
    """

    limit: int
    decrease_factor: float = DEFAULT_DECREASE_FACTOR
    recovery_rate: float = DEFAULT_RECOVERY_RATE
    #: Seconds after a decrease during which further throttles count as the same burst.
    holdoff: float = 1.0
    ceiling_factor: float = DEFAULT_CEILING_FACTOR
    ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"Expected a limit of at least 1 call, received {self.limit}.")
        if not 0 < self.decrease_factor < 1:
            raise ValueError(
                f"Expected a decrease factor between 0 and 1, received {self.decrease_factor}."
            )
        if self.recovery_rate <= 0:
            raise ValueError(
                f"Expected a recovery rate above 0 per second, received {self.recovery_rate}."
            )
        if self.holdoff < 0:
            raise ValueError(f"Expected a holdoff of at least 0 s, received {self.holdoff}.")
        # 1 would put the ceiling at a rate the upstream refused: it would never converge.
        if not 0 < self.ceiling_factor < 1:
            raise ValueError(
                f"Expected a ceiling factor between 0 and 1, received {self.ceiling_factor}."
            )
        if self.ceiling_recovery_time <= 0:
            raise ValueError(
                "Expected a ceiling recovery time above 0 s, received "
                f"{self.ceiling_recovery_time}."
            )

    @property
    def recovery_per_second(self) -> float:
        """Calls per window regained each second after a decrease (below the ceiling)."""
        return self.limit * self.recovery_rate

    def ceiling(self, decrease: Decrease | None, since: float) -> float:
        """The ceiling `since` seconds after `decrease` (the limit if None)."""
        if decrease is None:
            return float(self.limit)
        x = max(0.0, since) / self.ceiling_recovery_time
        # x * x * x, not x ** 3: the Redis scripts compute the same products.
        return min(float(self.limit), decrease.ceiling + self.limit * 0.5 * x * x * x)

    def effective(self, decrease: Decrease | None, since: float) -> float:
        """The effective limit `since` seconds after `decrease` (the limit if None)."""
        if decrease is None:
            return float(self.limit)
        climbed = decrease.base + self.recovery_per_second * max(0.0, since)
        return min(self.ceiling(decrease, since), climbed)

    def grants(self, effective: float) -> int:
        """Slots that may be held under `effective`: its integer part, at least 1."""
        return max(1, min(self.limit, math.floor(effective + _EPSILON)))

    def decreased(self, effective: float) -> Decrease:
        """The state right after a throttle seen at `effective`."""
        # min(): a decrease factor above the ceiling factor starts at the ceiling, not above.
        factor = min(self.decrease_factor, self.ceiling_factor)
        return Decrease(
            base=max(1.0, effective * factor),
            ceiling=max(1.0, effective * self.ceiling_factor),
        )

    def reaches_in(self, decrease: Decrease, target: float) -> float:
        """Seconds after `decrease` when the effective limit reaches `target` (<= limit)."""
        climb = (target - decrease.base) / self.recovery_per_second
        creep = 0.0
        if target > decrease.ceiling:
            creep = self.ceiling_recovery_time * (
                2.0 * (target - decrease.ceiling) / self.limit
            ) ** (1.0 / 3.0)
        # Both must be reached: the effective limit is the smaller of the two.
        return max(0.0, climb, creep)

    def recovered_in(self, decrease: Decrease) -> float:
        """Seconds after `decrease` when the effective limit is the configured limit again."""
        return self.reaches_in(decrease, float(self.limit))

    def next_step_in(self, decrease: Decrease | None, since: float) -> float:
        """Seconds from `since` until `grants` next goes up (inf when it is at the limit)."""
        current = self.effective(decrease, since)
        if decrease is None or current >= self.limit:
            return math.inf
        target = math.floor(current + _EPSILON) + 1
        return max(0.0, self.reaches_in(decrease, target) - since)


class AdaptiveLimit:
    """The effective limit of one process, on the caller's clock (times are absolute)."""

    __slots__ = ("_decrease", "_decreased_at", "rule")

    def __init__(self, rule: AimdRule) -> None:
        self.rule = rule
        self._decrease: Decrease | None = None
        self._decreased_at = -math.inf

    def effective(self, now: float) -> float:
        return self.rule.effective(self._decrease, now - self._decreased_at)

    def ceiling(self, now: float) -> float:
        """The ceiling the effective limit climbs to at `now`."""
        return self.rule.ceiling(self._decrease, now - self._decreased_at)

    def grants(self, now: float) -> int:
        """Slots that may be held at `now`."""
        return self.rule.grants(self.effective(now))

    def next_step(self, now: float) -> float:
        """When `grants` next goes up (inf when it is at the limit)."""
        return now + self.rule.next_step_in(self._decrease, now - self._decreased_at)

    def throttled(self, now: float) -> bool:
        """Record a throttled call at `now`. True when it decreased the limit (and set the
        ceiling), False when it fell within `holdoff` of the last decrease (the same burst)."""
        if now - self._decreased_at < self.rule.holdoff:
            return False
        self._decrease = self.rule.decreased(self.effective(now))
        self._decreased_at = now
        return True
