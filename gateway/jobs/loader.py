"""`JobLoader`: the per-request DataLoader in front of the shared `JobFetcher`.

A loader is made for each GraphQL request (or WebSocket operation) and dropped with it. Never
share one: its memo would hand one user's answers (and errors) to another, and aiodataloader
binds the event loop when a loader is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING

from aiodataloader import DataLoader

from gateway.jobs.fetcher import FetchResult, JobFetcher
from gateway.model import Job

if TYPE_CHECKING:
    from asyncio import Future

#: Most keys in one batch: at least the gateway's `max_ids` default, so that a `jobs(ids)`
#: query of 100 ids is one batch (larger sets are split into batches that run side by side).
MAX_BATCH_SIZE = 100


class JobLoader(DataLoader[str, Job | None]):
    """Loads job snapshots by id, batching the ids a request asks for in one loop tick.

    Batching contract (aiodataloader's, which this loader relies on):
    - `batch_load_fn(keys)` returns one value per key, in the order of the keys;
    - a value that is an `Exception` rejects that key's load alone (a `GatewayError` such as
      `BudgetExhausted`, or a masked bug); None resolves it (no such job);
    - if the whole batch fails (it raises, or returns a list of the wrong length), every key of
      the batch is rejected with that error and nothing of it stays memoized, so that nothing
      hangs and nothing bad is kept;
    - within the request, a key is loaded once and its outcome memoized (a repeated `load(id)`
      gets the same answer, which keeps one GraphQL response consistent).

    All loads of one request share `deadline` (on the fetcher's clock) and one budget key
    (`requester`: the caller's tenant, or a token of this loader), so the budget shares its
    slots fairly between tenants (or requests), whatever the number of ids each asks for.
    When every load of a batch has been cancelled (the request went away), the batch stops
    waiting, so the fetches it started may be dropped before they spend budget.
    """

    def __init__(
        self,
        fetcher: JobFetcher,
        deadline: float,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        requester: Hashable | None = None,
    ) -> None:
        # The running loop, explicitly: made outside a loop, this fails here rather than later.
        super().__init__(max_batch_size=max_batch_size, loop=asyncio.get_running_loop())
        self._fetcher = fetcher
        self.deadline = deadline
        #: This request's key in the budget's round-robin (never shown): the caller's tenant
        #: when given, else a token of this loader.
        self.requester: Hashable = object() if requester is None else requester

    def load(self, key: str) -> Future[Job | None]:
        """`DataLoader.load`, answering at once, without a batch, for a job whose final snapshot
        this process holds: the common case of a frontend showing finished jobs."""
        job = self._fetcher.peek_finished(key)
        if job is None:
            return super().load(key)
        future: Future[Job | None] = self.loop.create_future()
        future.set_result(job)
        return future

    # aiodataloader types the batch as List[ReturnT] although it rejects Exception values (its
    # documented contract), hence the ignore.
    async def batch_load_fn(self, keys: list[str]) -> list[FetchResult]:  # type: ignore[override]
        """One `fetcher.get_many` call for the whole batch; see the class docstring."""
        task = asyncio.current_task()
        loads = self._pending_loads(keys)
        left = len(loads)

        def load_done(future: Future[Job | None]) -> None:
            nonlocal left
            if not future.cancelled():
                return
            # A cancelled load must not stay memoized: a later load of the key starts afresh.
            key = loads[future]
            if self._cache.get(self.get_cache_key(key)) is future:
                self.clear(key)
            left -= 1
            if left == 0 and task is not None:
                # Every load of this batch was cancelled: nobody reads its results.
                task.cancel()

        for future in loads:
            future.add_done_callback(load_done)
        try:
            return await self._fetcher.get_many(keys, self.deadline, requester=self.requester)
        finally:
            for future in loads:
                future.remove_done_callback(load_done)

    def _pending_loads(self, keys: list[str]) -> dict[Future[Job | None], str]:
        """The future handed out for each key of the batch (`load` memoizes them), or nothing
        when one cannot be found: the batch is then never cancelled, as a load we cannot watch
        could still be waiting."""
        if not self.cache:
            return {}
        loads: dict[Future[Job | None], str] = {}
        for key in keys:
            future = self._cache.get(self.get_cache_key(key))
            if future is None or future.done():
                return {}
            loads[future] = key
        return loads
