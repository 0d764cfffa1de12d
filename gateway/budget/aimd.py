"""AIMD with a learned ceiling: how a budget lowers its rate when the upstream throttles, and
how it climbs back.

The budget keeps the account's limit on its own, but it is not the account's only client: another
application on the same account, or a limit lowered by the cloud, makes the upstream throttle
calls that our budget allowed. Going on at the full rate then wastes calls (each one throttled
and retried) and keeps the account over its limit. So, as TCP does with its congestion window
(CUBIC's shape, for the ceiling):

- **multiplicative decrease**: a throttled call multiplies the *effective* limit by
  `decrease_factor` (0.5), never below 1 call per window. Every call in flight when the upstream
  started throttling comes back throttled, but they all report the same event: a throttle within
  `holdoff` seconds of the last decrease (one window by default) is the same burst and changes
  nothing. Later throttles mean the lower rate is still too high, and decrease it again.
- **a learned ceiling**: the same decrease sets a *ceiling* a little under the rate that was
  throttled: `ceiling = max(1, effective_at_throttle * ceiling_factor)` (0.9). The upstream
  told us that rate is too much; the ceiling remembers it, so that the climb stops short of it.
- **additive increase, capped**: from the decrease on, the effective limit climbs linearly by
  `recovery_rate * limit` calls per window each second (5% of the limit per second), but never
  above the ceiling (nor the configured `limit`).
- **a ceiling that creeps back, slowly then faster**: the ceiling itself regains
  `limit / 2 * (t / ceiling_recovery_time) ** 3` calls t seconds after the decrease, up to the
  limit: half the limit after `ceiling_recovery_time` (300 s), almost nothing for the first
  minute (0.4% of the limit after 60 s).

So the effective limit t seconds after a decrease that left it at `base` and the ceiling at
`c` is `min(limit, base + recovery_rate * limit * t, c + limit / 2 * (t / T) ** 3)`, T being
`ceiling_recovery_time`; with no decrease, `limit`.

**It converges.** A co-tenant that keeps its share leaves us some rate R. Each throttle
halves the rate and sets the ceiling at 0.9 of the rate that was throttled, so the ceiling
only goes down, geometrically, while throttles go on. Once a halving has brought the rate
under R, the climb that follows is throttled just above R (or stops at a ceiling under R):
the ceiling is then under R, after about log2(limit / R) + 1 throttles (from 50 to 20: three,
at 50, about 27 and about 21, within 5 s). Only when R is a few percent of the limit does the
climb (5% of the limit per second) overshoot R by much before the holdoff ends, and the
ceiling needs more 10% steps: at R = 5% of the limit, 13 throttles in 13 s. Under the ceiling
the effective limit stays, and no call is throttled, until the ceiling has crept back by 10%
of the rate: one throttled burst (one decrease, as any burst) every
`T * (0.2 * R / limit) ** (1/3)` seconds: 139 s when R is half the limit, 102 s at a fifth,
169 s at 90%, 65 s at 5%. The old rule (climb straight back to the limit) throttled every ~10 s,
forever.

**It rediscovers capacity.** When the co-tenant leaves, nothing tells us but the absence of
throttles; the longer the quiet, the likelier the capacity is back, hence a creep that
accelerates: a ceiling at half the limit is whole again after 5 minutes (T), one at 10% after
6 min, one at 90% (a single throttle at full rate: a passing spike on the other side) after 3.

Why these numbers. Halving is the classic answer to "we do not know the other client's share":
two AIMD clients sharing a limit converge to equal shares whatever they started with. The climb
is proportional to the limit, so a budget of 10 calls and one of 100 recover in the same time;
at 5% per second a halved rate is back up to its ceiling within 8 s. 0.9 gives up 10% of the
rate the upstream allows (at worst; the rounding to whole calls often gives less) in exchange
for a margin the ceiling takes minutes to eat. A linear creep cannot make both ends good: at a
rate that regains half the limit in 5 minutes, it crosses the 10% margin in 30 s when R is half
the limit (a throttled burst every 30 s); the cubic crosses it in 139 s for the same 5 minutes.

The effective limit is a real number; grants use its integer part (at least 1). `AimdRule` is
the arithmetic, shared by `LocalBudget` (through `AdaptiveLimit`, which holds the state of one
process) and `RedisBudget` (whose scripts compute the same formula on state kept in Redis, so
that the whole fleet slows down and recovers together).
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
