"""`SharedAnswers`: kept answers shared by every gateway process through Redis.

One key per answer, `{prefix}:answer:<key hex>`, holding a one-line JSON header (the answer's
expiry, whether it is immutable or private, its content type and operation) and then the body,
with Redis's own expiry at the answer's. Reads and writes go through the process's
`BackendSwitch`: while Redis does not answer, a read is a miss and a write is skipped (the
process keeps its own answers in memory, as it always does), so an outage costs the fleet-wide
hit ratio, never an answer. Writes leave the request's path (a task each, a bounded number at a
time: beyond it, a write is skipped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Final

import redis.exceptions

from gateway.answers.store import Answer
from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable
from gateway.shared.switch import BackendSwitch

__all__ = ["FORMAT_VERSION", "SharedAnswers"]

logger = logging.getLogger(__name__)

#: Version of the stored header; a value of another version is a miss, never misread.
FORMAT_VERSION: Final = 1
#: Writes to Redis under way at once, at most.
MAX_PENDING_WRITES: Final = 64


class SharedAnswers:
    """See the module docstring. `clock` is the wall clock of `Answer.expires_at`."""

    def __init__(
        self,
        client: RedisClient,
        switch: BackendSwitch,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._switch = switch
        self._prefix = prefix
        self._clock = clock
        self._writes: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.skipped_writes = 0

    def key(self, hex_key: str) -> str:
        return f"{self._prefix}:answer:{hex_key}"

    async def get(self, hex_key: str) -> Answer | None:
        """The answer kept under `hex_key` fleet-wide, or None (also while Redis is down)."""

        async def primary() -> Answer | None:
            try:
                value = await self._redis.get(self.key(hex_key))
            except REDIS_UNAVAILABLE as exc:
                raise redis_unavailable(exc) from exc
            return None if value is None else self._decode(value)

        async def fallback() -> Answer | None:
            return None

        answer = await self._switch.serve(primary, fallback)
        if answer is None:
            self.misses += 1
        else:
            self.hits += 1
        return answer

    def put(self, hex_key: str, answer: Answer) -> None:
        """Write `answer` in the background (skipped when too many writes are under way)."""
        if len(self._writes) >= MAX_PENDING_WRITES:
            self.skipped_writes += 1
            return
        task = asyncio.get_running_loop().create_task(self._write(hex_key, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, hex_key: str, answer: Answer) -> None:
        milliseconds = int((answer.expires_at - self._clock()) * 1000)
        if milliseconds <= 0:
            return
        value = self._encode(answer)

        async def primary() -> None:
            try:
                await self._redis.set(self.key(hex_key), value, px=milliseconds)
            except REDIS_UNAVAILABLE as exc:
                raise redis_unavailable(exc) from exc

        async def fallback() -> None:
            return None

        try:
            await self._switch.serve(primary, fallback)
            self.writes += 1
        except redis.exceptions.RedisError:
            # Not an outage (a bug, or a refused command): this answer is not shared, that is all.
            logger.warning("Could not share a kept answer through Redis", exc_info=True)

    async def aclose(self) -> None:
        """Wait for the writes under way (a shutdown that loses them loses nothing but hits)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    @staticmethod
    def _encode(answer: Answer) -> bytes:
        header = {
            "v": FORMAT_VERSION,
            "expiresAt": answer.expires_at,
            "immutable": answer.immutable,
            "private": answer.private,
            "contentType": answer.content_type.decode("latin-1"),
            "operation": answer.operation,
            "etag": answer.etag.decode("latin-1"),
        }
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + answer.body

    def _decode(self, value: bytes | str) -> Answer | None:
        raw = value.encode("latin-1") if isinstance(value, str) else value
        head, newline, body = raw.partition(b"\n")
        try:
            header = json.loads(head)
            if not newline or header.get("v") != FORMAT_VERSION:
                return None
            answer = Answer(
                body=body,
                content_type=str(header["contentType"]).encode("latin-1"),
                expires_at=float(header["expiresAt"]),
                immutable=bool(header["immutable"]),
                private=bool(header["private"]),
                operation=header["operation"],
                etag=str(header["etag"]).encode("latin-1"),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return answer if answer.expires_at > self._clock() else None
