"""Stores of automatic persisted queries: sha256 -> document, each kept `ttl` seconds.

- `LocalDocumentStore`: this process's memory, bounded in bytes (least recently used go first).
- `RedisDocumentStore`: `{prefix}:apq:{<hash>}` in the Redis every process shares, with Redis's
  own expiry; a value that is not the document of its hash (another writer, a corrupted key) is
  a miss, never run. Redis not answering raises `BackendUnavailable`.
- `FailoverDocumentStore`: the fleet's store. A hash names one document forever, so a copy kept
  in memory is never stale: the memory answers first, Redis next (a hit is copied to memory),
  and a registration goes to both. While Redis does not answer (the process's one
  `BackendSwitch` says), the memory alone serves: an outage costs sharing, never answers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from cachetools import TLRUCache

from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable
from gateway.shared.switch import BackendSwitch

__all__ = ["FailoverDocumentStore", "LocalDocumentStore", "RedisDocumentStore"]


def _size(document: str) -> int:
    return len(document.encode("utf-8", "surrogatepass"))


class LocalDocumentStore:
    """Documents in this process's memory: at most `max_bytes` of them (UTF-8), each for `ttl`
    seconds of `clock` after it was put."""

    def __init__(
        self, *, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._documents: TLRUCache[str, str] = TLRUCache(
            maxsize=max_bytes, ttu=self._expiry, timer=clock, getsizeof=_size
        )

    def _expiry(self, _key: str, _document: str, now: float) -> float:
        return now + self._ttl

    async def get(self, sha256_hash: str) -> str | None:
        return self.peek(sha256_hash)

    def peek(self, sha256_hash: str) -> str | None:
        """`get`, without waiting: memory never blocks."""
        return self._documents.get(sha256_hash)

    async def put(self, sha256_hash: str, document: str) -> None:
        self.keep(sha256_hash, document)

    def keep(self, sha256_hash: str, document: str) -> None:
        """`put`, without waiting; a document larger than the whole store is not kept."""
        if _size(document) <= self._max_bytes:
            self._documents[sha256_hash] = document

    @property
    def bytes(self) -> int:
        """What the documents kept take (UTF-8 bytes)."""
        return int(self._documents.currsize)


class RedisDocumentStore:
    """Documents in Redis under `{prefix}:apq:{<hash>}`, each expiring `ttl` seconds after it
    was last put. Shared by every process using that Redis and prefix."""

    def __init__(self, client: RedisClient, *, prefix: str, ttl: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl * 1000))

    def key(self, sha256_hash: str) -> str:
        return f"{self._prefix}:apq:{{{sha256_hash}}}"

    async def get(self, sha256_hash: str) -> str | None:
        try:
            value = await self._redis.get(self.key(sha256_hash))
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        if not isinstance(value, bytes | str):
            return None
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        # Only the document of this hash runs under it, whoever wrote the key.
        if hashlib.sha256(raw).hexdigest() != sha256_hash:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def put(self, sha256_hash: str, document: str) -> None:
        try:
            await self._redis.set(
                self.key(sha256_hash), document.encode("utf-8", "surrogatepass"), px=self._ttl_ms
            )
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc


class FailoverDocumentStore:
    """`shared` (Redis) behind `memory`, following `switch`; see the module docstring."""

    def __init__(
        self, shared: RedisDocumentStore, memory: LocalDocumentStore, switch: BackendSwitch
    ) -> None:
        self._shared = shared
        self._memory = memory
        self._switch = switch

    async def get(self, sha256_hash: str) -> str | None:
        document = self._memory.peek(sha256_hash)
        if document is not None:
            return document

        async def unknown() -> str | None:
            return None

        document = await self._switch.serve(lambda: self._shared.get(sha256_hash), unknown)
        if document is not None:
            self._memory.keep(sha256_hash, document)
        return document

    async def put(self, sha256_hash: str, document: str) -> None:
        self._memory.keep(sha256_hash, document)

        async def kept() -> None:
            return None

        await self._switch.serve(lambda: self._shared.put(sha256_hash, document), kept)
