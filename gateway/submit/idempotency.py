"""Idempotency keys of `submitJob`: what each key of a tenant stands for, for `ttl` seconds.

A key's record is one of three states:

    pending   a submission with this key is under way in some process (`token` names it);
              past `lease_until` (wall clock) its process is presumed dead mid-call: in doubt
    done      the submission created `job_id`
    in_doubt  the submission reached the upstream and its answer was lost: the job may exist

`begin` stores a pending record unless the key has one (the existing record is answered: one
atomic step, so two processes never both own a key); `settle` turns the owner's pending record
into done or in doubt, or deletes it (`None`: the submission surely did not happen, the key is
free again). Records live `ttl` seconds from their last write.

`LocalIdempotencyStore` keeps them in this process; `RedisIdempotencyStore` in Redis, shared by
the fleet (one key each, `{prefix}:submit:<sha256 of tenant and key>`), raising
`BackendUnavailable` when Redis does not answer; `FailoverIdempotencyStore` serves from Redis
while the `BackendSwitch` says it answers, from this process's memory while it does not (keys
are then remembered per process only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from cachetools import TTLCache

from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable
from gateway.shared.switch import BackendSwitch

__all__ = [
    "FailoverIdempotencyStore",
    "IdempotencyStore",
    "LocalIdempotencyStore",
    "Record",
    "RedisIdempotencyStore",
    "record_key",
]

State = Literal["pending", "done", "in_doubt"]

#: Keys one process remembers in memory at most (the oldest go first).
DEFAULT_MAX_LOCAL_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Record:
    """What an idempotency key stands for; see the module docstring."""

    state: State
    #: The digest of the submission's parameters: the same key with others is a reuse.
    fingerprint: str
    #: The owner of a pending record (a random token of the submitting request).
    token: str = ""
    #: Wall-clock time after which a pending record's owner is presumed dead.
    lease_until: float = math.inf
    job_id: str | None = None

    def to_json(self) -> str:
        value = dataclasses.asdict(self)
        if math.isinf(self.lease_until):
            value["lease_until"] = None
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        value = json.loads(text)
        lease = value.get("lease_until")
        return cls(
            state=value["state"],
            fingerprint=value["fingerprint"],
            token=value.get("token", ""),
            lease_until=math.inf if lease is None else float(lease),
            job_id=value.get("job_id"),
        )


def record_key(tenant: str | None, key: str) -> str:
    """The store's name for `key` of `tenant`: a digest, so that neither a tenant's name nor a
    client's key (up to its maximum length) reaches Redis as it is."""
    owner = "\x00" if tenant is None else f"t:{tenant}"
    return hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()


class IdempotencyStore(Protocol):
    """Where the records live; see the module docstring."""

    async def begin(self, key: str, pending: Record) -> Record | None:
        """Store `pending` unless `key` has a record: None when stored (the caller owns the key),
        else the record found."""
        ...

    async def settle(self, key: str, token: str, record: Record | None) -> None:
        """Replace the pending record of `token` with `record` (None: delete it); a record that
        is not that pending one is left alone."""
        ...


class LocalIdempotencyStore:
    """Records of this process alone, `ttl` seconds each on `clock`, at most `max_keys`."""

    def __init__(
        self,
        ttl: float,
        *,
        max_keys: int = DEFAULT_MAX_LOCAL_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records: TTLCache[str, Record] = TTLCache(maxsize=max_keys, ttl=ttl, timer=clock)

    async def begin(self, key: str, pending: Record) -> Record | None:
        found = self._records.get(key)
        if found is not None:
            return found
        self._records[key] = pending
        return None

    async def settle(self, key: str, token: str, record: Record | None) -> None:
        found = self._records.get(key)
        if found is None or found.state != "pending" or found.token != token:
            return
        if record is None:
            del self._records[key]
        else:
            self._records[key] = record


# Both scripts touch one key: fit for a Redis Cluster as they are.
_BEGIN = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
_SETTLE = """
local found = redis.call('GET', KEYS[1])
if not found then return 0 end
local record = cjson.decode(found)
if record['state'] ~= 'pending' or record['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


class RedisIdempotencyStore:
    """Records shared by every process using the same Redis and `prefix`, `ttl` seconds each
    (Redis's own expiry)."""

    def __init__(self, redis: RedisClient, *, ttl: float, prefix: str) -> None:
        self._prefix = prefix
        self._ttl_ms = max(1, math.ceil(ttl * 1000))
        self._begin = redis.register_script(_BEGIN)
        self._settle = redis.register_script(_SETTLE)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:submit:{key}"

    async def begin(self, key: str, pending: Record) -> Record | None:
        try:
            found = await self._begin(keys=[self._key(key)], args=[pending.to_json(), self._ttl_ms])
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        return None if found is None else Record.from_json(found)

    async def settle(self, key: str, token: str, record: Record | None) -> None:
        value = "" if record is None else record.to_json()
        try:
            await self._settle(keys=[self._key(key)], args=[token, value, self._ttl_ms])
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc


class FailoverIdempotencyStore:
    """`primary` (Redis) while `switch` says it answers, else `fallback` (this process)."""

    def __init__(
        self, primary: IdempotencyStore, fallback: IdempotencyStore, switch: BackendSwitch
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._switch = switch

    async def begin(self, key: str, pending: Record) -> Record | None:
        return await self._switch.serve(
            lambda: self._primary.begin(key, pending), lambda: self._fallback.begin(key, pending)
        )

    async def settle(self, key: str, token: str, record: Record | None) -> None:
        # Both sides: the record was begun on one of them, and the switch may have turned since.
        await self._switch.serve(
            lambda: self._primary.settle(key, token, record),
            lambda: self._fallback.settle(key, token, record),
        )
        await self._fallback.settle(key, token, record)
