"""Execution that gives the event loop a turn during long lists, and stops at the deadline.

graphql-core completes the items of a list one after another without ever awaiting, so one long
list (a page of 20,000 files, each with a signed URL, where `GATEWAY_MAX_PAGE_SIZE` allows one)
held the event loop for its whole completion: every other request of the process waited, and the
request's own deadline was never looked at. `PacedExecution` hands each list longer than
`PACED_LENGTH` to graphql-core as an async iterator (`Pacer.paced`), which graphql-core completes
item by item, awaiting each:

- at most every `TURN_SECONDS` of the request's work, the iterator awaits `asyncio.sleep(0)`, so
  that the other requests of the process are served in between;
- once the request's deadline has passed, the iterator raises `DeadlineExceeded`: the list fails
  with that error at its path, and so does every later long list of the request.

Items keep their order and the answer is the same as unpaced. Shorter lists complete as before:
what their items cost is bounded by the operation's cost limit (`gateway.api.cost`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sized
from typing import Any, TypeVar

from graphql import GraphQLList, GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import AwaitableOrValue, Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.api.context import Context
from gateway.errors import DeadlineExceeded

T = TypeVar("T")

#: Lists at most this long complete without pacing: too short to hold the loop for long.
PACED_LENGTH = 32
#: The longest stretch of one request's list items between two turns of the event loop.
TURN_SECONDS = 0.005


class Pacer:
    """Paces the lists of one execution: a turn of the event loop at least every
    `turn_seconds` of its work, and `DeadlineExceeded` once `deadline` (on `clock`) has come.
    A deadline of None never comes."""

    def __init__(
        self,
        *,
        deadline: float | None,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        turn_seconds: float = TURN_SECONDS,
    ) -> None:
        self._deadline = deadline
        self._timeout = timeout
        self._clock = clock
        self._turn_seconds = turn_seconds
        self._last_turn = clock()
        #: Turns given to the event loop so far.
        self.turns = 0

    async def paced(self, items: Iterable[T]) -> AsyncIterator[T]:
        """`items`, in order, pausing for a turn of the loop when this execution has worked for
        `turn_seconds` since the last, and raising DeadlineExceeded past the deadline."""
        deadline = self._deadline
        for item in items:
            now = self._clock()
            if deadline is not None and now >= deadline:
                raise DeadlineExceeded("its answer was being made", timeout=self._timeout)
            if now - self._last_turn >= self._turn_seconds:
                await asyncio.sleep(0)
                self.turns += 1
                self._last_turn = self._clock()
            yield item


class PacedExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, completing long lists through a `Pacer` (one per execution)
    bound to the request's deadline when the context is a gateway `Context`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        context = self.context_value
        self.pacer = (
            Pacer(deadline=context.deadline, timeout=context.timeout)
            if isinstance(context, Context)
            else Pacer(deadline=None, timeout=0.0)
        )

    def build_per_event_executor(self, payload: Any) -> PacedExecution:
        # A subscription's events come long after its operation began: each gets a deadline
        # of its own, a request's time from now.
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, PacedExecution)
        context = self.context_value
        if isinstance(context, Context):
            executor.pacer = Pacer(
                deadline=time.monotonic() + context.timeout, timeout=context.timeout
            )
        return executor

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> AwaitableOrValue[list[Any]]:
        if isinstance(result, Sized) and len(result) > PACED_LENGTH:
            result = self.pacer.paced(result)  # type: ignore[arg-type]
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )
