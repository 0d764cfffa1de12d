"""`AdaptiveLimit`: how many GraphQL requests may run at once in this process, learned from how
long requests wait to start.

The wait from a request's first byte to its start is a turn or two of the event loop: long only
when the process is short of CPU, and then every request let in makes every other one slower at
each of its steps. So, additive increase and multiplicative decrease on that wait:

- a request that waited more than `target_wait` lowers the limit to three quarters of the
  requests running then (at most once per `target_wait`: the waits of one stall are one
  signal), never under `floor`;
- one that waited less raises it by one over the limit, up to `ceiling`: by one for as many
  requests as the limit lets run, as TCP grows its window by one a round trip.

A process with CPU to spare never lowers it, whatever it runs (requests waiting for upstream
slots cost no CPU): a fixed limit would refuse a burst its budget could serve in time.
"""

from __future__ import annotations

__all__ = ["AdaptiveLimit"]

#: Fraction of the requests running that the limit is lowered to.
DECREASE = 0.75


class AdaptiveLimit:
    """See the module docstring. `limit` starts at `ceiling`."""

    def __init__(self, *, target_wait: float, ceiling: int, floor: int = 8) -> None:
        self.target_wait = target_wait
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = float(ceiling)
        self._lowered_at: float | None = None

    def observe(self, waited: float, running: int, now: float) -> None:
        """A request waited `waited` seconds to start, at `now`, while `running` ran."""
        if waited <= self.target_wait:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            return
        if self._lowered_at is not None and now - self._lowered_at < self.target_wait:
            return
        self._lowered_at = now
        self.limit = max(float(self.floor), DECREASE * min(self.limit, float(running)))

    def admits(self, running: int) -> bool:
        """Whether one more request may run while `running` do."""
        return running < self.limit
