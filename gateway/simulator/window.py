"""Rolling 1-second windows over the simulator clock: the QPS limit and the peak meter.

Both are sliding logs of arrival times, not fixed buckets, so "at most N in any rolling second"
holds whatever the alignment, and the peak is exact: the largest number of arrivals that ever fell
in one half-open window `(t - 1 s, t]`. (For sorted arrivals that maximum is reached by a window
ending on an arrival, which is exactly when it is measured.)

Times are float seconds: two calls "exactly" one second apart may land on either side of the edge
after rounding, so a client pacing itself against this limit should keep a few milliseconds of
margin (the gateway's budget has `upstream_window_margin` for this).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_SECONDS = 1.0


class SlidingLog:
    """Arrival times within the last window. Memory is bounded by the arrivals of one window."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self._window = window
        self._times: deque[float] = deque()

    def count(self, now: float) -> int:
        """How many recorded arrivals fall in `(now - window, now]`."""
        self._prune(now)
        return len(self._times)

    def add(self, now: float) -> int:
        """Record an arrival at `now`; return the count in the window ending at it."""
        self._prune(now)
        self._times.append(now)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()

    def _prune(self, now: float) -> None:
        horizon = now - self._window
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


@dataclass
class ActionMeter:
    """Admission and counters of one action.

    `calls` counts every call that reached the action (throttled ones included), `throttled` those
    refused, and `peak_window` the most calls, throttled ones included, seen in any rolling second.
    """

    calls: int = 0
    throttled: int = 0
    peak_window: int = 0
    _admitted: SlidingLog = field(default_factory=SlidingLog, repr=False)
    _arrivals: SlidingLog = field(default_factory=SlidingLog, repr=False)

    def admit(self, now: float, limit: int) -> bool:
        """Count a call arriving at `now`; True if fewer than `limit` calls were admitted in the
        rolling second ending at `now` (the call is then admitted too), False if it is throttled.
        """
        self.calls += 1
        self.peak_window = max(self.peak_window, self._arrivals.add(now))
        if self._admitted.count(now) >= limit:
            self.throttled += 1
            return False
        self._admitted.add(now)
        return True

    def reset(self) -> None:
        """Zero the counters and the peak. Admission history stays: the limit is not a statistic."""
        self.calls = self.throttled = self.peak_window = 0
        self._arrivals.clear()

    def as_json(self) -> dict[str, int]:
        return {"calls": self.calls, "throttled": self.throttled, "peakWindow": self.peak_window}
