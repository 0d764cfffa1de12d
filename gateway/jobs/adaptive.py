"""AIMD: how a budget lowers its rate when the upstream throttles, and how it climbs back.

The budget keeps the account's limit on its own, but it is not the account's only client: another
application on the same account, or a limit lowered by the cloud, makes the upstream throttle
calls that our budget allowed. Going on at the full rate then wastes calls (each one throttled
and retried) and keeps the account over its limit. So, as TCP does with its congestion window:

- **multiplicative decrease**: a throttled call multiplies the *effective* limit by
  `decrease_factor` (0.5), never below 1 call per window. Every call in flight when the upstream
  started throttling comes back throttled, but they all report the same event: a throttle within
  `holdoff` seconds of the last decrease (one window by default) is the same burst and changes
  nothing. Later throttles mean the lower rate is still too high, and halve it again.
- **additive increase**: from the decrease on, the effective limit climbs linearly by
  `recovery_rate * limit` calls per window each second (5% of the limit per second: a halved
  limit is whole again 10 s later) back to the configured `limit`, never above it.

Why these numbers. Halving is the classic answer to "we do not know the other client's share":
two AIMD clients sharing a limit converge to equal shares whatever they started with. The climb
is proportional to the limit, so a budget of 10 calls and one of 100 recover in the same time;
10 s is ten times the window: slow enough that a co-tenant that keeps its load costs us one
throttled burst every ten seconds or so, not a steady stream, and fast enough that a passing
spike (a batch job on the other side) costs seconds, not minutes.

The effective limit is a real number; grants use its integer part (at least 1). `AimdRule` is
the arithmetic, shared by `LocalBudget` (through `AdaptiveLimit`, which holds the state of one
process) and `RedisBudget` (whose script runs the same formula on state kept in Redis, so that
the whole fleet slows down and recovers together).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_DECREASE_FACTOR",
    "DEFAULT_RECOVERY_RATE",
    "AdaptiveLimit",
    "AimdRule",
]

#: The effective limit is multiplied by this on a throttle.
DEFAULT_DECREASE_FACTOR: Final = 0.5
#: Share of the configured limit regained per second after a decrease.
DEFAULT_RECOVERY_RATE: Final = 0.05

# Integer parts are taken with this much slack, so that 49.999999999 (a float sum that means
# 50) grants 50.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class AimdRule:
    """The AIMD arithmetic for one configured `limit`; see the module docstring.

    A decrease is described by `base` (the effective limit right after it) and `since` (seconds
    elapsed since it); no decrease (or a full recovery) is `base=None`.
    """

    limit: int
    decrease_factor: float = DEFAULT_DECREASE_FACTOR
    recovery_rate: float = DEFAULT_RECOVERY_RATE
    #: Seconds after a decrease during which further throttles count as the same burst.
    holdoff: float = 1.0

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

    @property
    def recovery_per_second(self) -> float:
        """Calls per window regained each second after a decrease."""
        return self.limit * self.recovery_rate

    def effective(self, base: float | None, since: float) -> float:
        """The effective limit `since` seconds after a decrease to `base` (the limit if None)."""
        if base is None:
            return float(self.limit)
        return min(float(self.limit), base + self.recovery_per_second * max(0.0, since))

    def grants(self, effective: float) -> int:
        """Slots that may be held under `effective`: its integer part, at least 1."""
        return max(1, min(self.limit, math.floor(effective + _EPSILON)))

    def decreased(self, effective: float) -> float:
        """The effective limit right after a throttle seen at `effective`."""
        return max(1.0, effective * self.decrease_factor)

    def next_step_in(self, base: float | None, since: float) -> float:
        """Seconds from `since` until `grants` next goes up (inf when it is at the limit)."""
        current = self.effective(base, since)
        if base is None or current >= self.limit:
            return math.inf
        target = math.floor(current + _EPSILON) + 1
        return max(0.0, (target - base) / self.recovery_per_second - since)


class AdaptiveLimit:
    """The effective limit of one process, on the caller's clock (times are absolute)."""

    __slots__ = ("_base", "_decreased_at", "rule")

    def __init__(self, rule: AimdRule) -> None:
        self.rule = rule
        self._base: float | None = None
        self._decreased_at = -math.inf

    def effective(self, now: float) -> float:
        return self.rule.effective(self._base, now - self._decreased_at)

    def grants(self, now: float) -> int:
        """Slots that may be held at `now`."""
        return self.rule.grants(self.effective(now))

    def next_step(self, now: float) -> float:
        """When `grants` next goes up (inf when it is at the limit)."""
        return now + self.rule.next_step_in(self._base, now - self._decreased_at)

    def throttled(self, now: float) -> bool:
        """Record a throttled call at `now`. True when it decreased the limit, False when it
        fell within `holdoff` of the last decrease (the same burst)."""
        if now - self._decreased_at < self.rule.holdoff:
            return False
        self._base = self.rule.decreased(self.effective(now))
        self._decreased_at = now
        return True
