"""Timers on an injectable clock, for the budgets' wake-ups and deadlines.

By default a budget reads `time.monotonic` and schedules on the running loop; tests pass a
manual clock whose `call_later` fires when the test moves time, so they never sleep.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

__all__ = ["CallLater", "TimerHandle", "schedule"]


class TimerHandle(Protocol):
    """What `call_later` returns: something that can be cancelled (as `asyncio.TimerHandle`)."""

    def cancel(self) -> None: ...


#: Schedules `callback()` after `delay` seconds of the budget's clock (as `loop.call_later`).
CallLater = Callable[[float, Callable[[], None]], TimerHandle]


def schedule(
    call_later: CallLater | None, delay: float, callback: Callable[[], None]
) -> TimerHandle:
    """`callback` after `delay` seconds: through `call_later` when injected, else the running
    loop's; an infinite delay gets a timer that never fires."""
    if math.isinf(delay):
        return _NeverFires()
    if call_later is not None:
        return call_later(delay, callback)
    return asyncio.get_running_loop().call_later(delay, callback)


class _NeverFires:
    """The timer of an infinite delay."""

    def cancel(self) -> None:
        pass
