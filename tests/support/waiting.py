"""Waiting for events, never for durations.

A test that needs something to have happened (a server answers, a key expired, a task reached
a gate) waits for that event, polling, under a safety bound that only a hang reaches: the bound
is never the expected duration, so a slow machine makes a test slower, never red.

`timers_fired()` tells whether a block waited on any timer at all (a backoff, a timeout, a poll
interval): the form of "it answered at once" that holds on any machine.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

__all__ = ["SAFETY_TIMEOUT", "eventually", "timers_fired", "wait_until"]

#: Seconds after which a wait gives up: far beyond anything a correct build needs, even on a
#: busy machine, so reaching it means a hang (or a bug), not slowness.
SAFETY_TIMEOUT: Final = 30.0


def wait_until(
    check: Callable[[], bool],
    what: str,
    *,
    within: float = SAFETY_TIMEOUT,
    interval: float = 0.02,
    ignore: tuple[type[Exception], ...] = (),
) -> None:
    """Return once `check()` is true. An exception of `ignore` raised by `check` counts as
    false (say `OSError` while a server is not listening yet).

    Raises `TimeoutError` naming `what` when `check()` is still false after `within` seconds.
    Blocks the thread: for synchronous code (starting processes); tests on an event loop use
    `eventually`.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within} s.")
        time.sleep(interval)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    within: float = SAFETY_TIMEOUT,
    interval: float = 0.01,
) -> None:
    """Return once `check()` (a function, or a coroutine function) is true, letting other
    tasks run in between.

    Raises `TimeoutError` naming `what` when it is still false after `within` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within} s.")
        await asyncio.sleep(interval)


@contextmanager
def timers_fired() -> Iterator[list[float]]:
    """Record the timers of the running event loop that are scheduled inside the block and fire
    before it ends, as their delays in seconds.

    Every timer of an asyncio loop goes through `loop.call_at`: `asyncio.sleep`, `call_later`,
    `asyncio.timeout` and `wait_for` alike. So an empty list means the block waited on no timer:
    no backoff, no timeout reached, no poll interval; it was done as soon as the I/O it did
    was. Timers scheduled inside the block and cancelled (a timeout that was not reached) are
    not recorded; neither are timers scheduled before the block.
    """
    loop = asyncio.get_running_loop()
    schedule = loop.call_at
    fired: list[float] = []
    recording = True

    def call_at(
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        delay = when - loop.time()

        def fire(*args: Any) -> None:
            if recording:
                fired.append(delay)
            callback(*args)

        return schedule(when, fire, *args, context=context)

    # An instance attribute shadows the method for this loop only; `call_later` calls it too.
    loop.call_at = call_at  # type: ignore[method-assign,assignment]
    try:
        yield fired
    finally:
        recording = False
        del loop.call_at
