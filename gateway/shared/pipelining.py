"""`ScriptBatcher`: Lua script calls made while a batch is on its way go together in the next.

A request of a hundred ids claims a hundred ids, and a hundred completed calls release a hundred
budget slots: one round trip and one pooled connection each would exhaust the pool under a burst
(a full pool reads as an outage) and spend most of Redis's time on round trips. So the calls a
process makes while one batch is in flight wait for the next, which carries them all in one
non-transactional pipeline: the first call of a quiet moment goes at once, and under load the
batches grow instead of the connections. Each call still gets its own answer or error.

On a Redis Cluster, calls go one by one (a cluster pipeline splits them per node anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from gateway.shared.backend import RedisClient

__all__ = ["ScriptBatcher"]

logger = logging.getLogger(__name__)

#: Most calls in one pipeline.
MAX_BATCH: Final = 256


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int | float]
    future: asyncio.Future[Any] = field(repr=False)


class ScriptBatcher:
    """Runs script calls on `client`, batched; see the module docstring."""

    def __init__(self, client: RedisClient, *, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._max_batch = max_batch
        self._batching = not isinstance(client, RedisCluster)
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        self._round_trips = 0

    @property
    def round_trips(self) -> int:
        """Pipelines (or single calls) sent and not answered yet."""
        return self._round_trips

    async def run(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """`script(keys, args)`'s answer; raises what the call raises (redis-py's errors)."""
        if not self._batching:
            self._round_trips += 1
            try:
                return await script(keys=keys, args=args)
            finally:
                self._round_trips -= 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(script, keys, args, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name="redis script batch"
            )
        # A caller cancelled here cancels its future: a batch not yet sent leaves it out.
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                batch = [call for call in batch if not call.future.done()]
                if batch:
                    await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Call]) -> None:
        self._round_trips += 1
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for call in batch:
                    # EVALSHA alone: the rare missing script is loaded below, for its calls only
                    # (redis-py's own pipeline scripts cost a SCRIPT EXISTS every batch).
                    pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                answers = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the whole batch failed: every call gets the error
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        finally:
            self._round_trips -= 1
        for call, answer in zip(batch, answers, strict=True):
            if isinstance(answer, redis.exceptions.NoScriptError):
                # Redis restarted since the script was loaded: this call loads it again.
                answer = await self._retry(call)
            if call.future.done():
                continue
            if isinstance(answer, BaseException):
                call.future.set_exception(answer)
            else:
                call.future.set_result(answer)

    async def _retry(self, call: _Call) -> Any:
        try:
            return await call.script(keys=call.keys, args=call.args)
        except Exception as exc:
            return exc
