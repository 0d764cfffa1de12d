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

from gateway.model import JsonValue

WINDOW_SECONDS = 1.0
#: Whole seconds of arrival counts kept: an hour, so a long benchmark is read whole and a
#: simulator left running for days holds a bounded list.
TIMELINE_SECONDS = 3600


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


class SecondCounts:
    """Arrivals in each whole second since the first one (the last `TIMELINE_SECONDS` of them):
    what a benchmark needs to tell a sustained rate from the burst that starts a run and the
    trickle that ends it."""

    def __init__(self, seconds: int = TIMELINE_SECONDS) -> None:
        self._first: float | None = None
        self._offset = 0  # the second (since the first arrival) that `_counts[0]` counts
        self._counts: deque[int] = deque()
        self._seconds = seconds

    def add(self, now: float) -> None:
        if self._first is None:
            self._first = now
        second = max(0, int(now - self._first))
        while self._offset + len(self._counts) <= second:
            self._counts.append(0)
        if len(self._counts) > self._seconds:
            dropped = len(self._counts) - self._seconds
            for _ in range(dropped):
                self._counts.popleft()
            self._offset += dropped
        index = second - self._offset
        if index >= 0:  # an arrival older than the kept hour (a clock step): not counted
            self._counts[index] += 1

    def clear(self) -> None:
        self._first = None
        self._offset = 0
        self._counts.clear()

    def as_json(self) -> dict[str, JsonValue]:
        counts: list[JsonValue] = list(self._counts)
        return {"fromSecond": self._offset, "counts": counts}


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
    #: Arrivals per whole second since the first one after a reset (throttled ones included).
    timeline: SecondCounts = field(default_factory=SecondCounts, repr=False)

    def admit(self, now: float, limit: int) -> bool:
        """Count a call arriving at `now`; True if fewer than `limit` calls were admitted in the
        rolling second ending at `now` (the call is then admitted too), False if it is throttled.
        """
        self.calls += 1
        self.timeline.add(now)
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
        self.timeline.clear()

    def as_json(self) -> dict[str, int]:
        return {"calls": self.calls, "throttled": self.throttled, "peakWindow": self.peak_window}
