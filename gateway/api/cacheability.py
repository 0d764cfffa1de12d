"""`Cacheability`: whether the answer of one operation may be kept, and for how long.

An answer may be kept only while everything that made it stays as it was: the operation is a
query, it answered no error, and no field it resolved moves with time. A finished job (SUCCESS
or FAIL) never changes; a running one is served from the snapshot cache until its snapshot
expires (`fetched_at` + `GATEWAY_CACHE_RUNNING_TTL`, rounded down to a grid:
`gateway.jobs.cache.running_expiry`), so an answer that read running snapshots
stays right until the earliest of those expiries, and only while each snapshot is still the one
the process holds (the answer records their versions, `snapshots`, which the kept-answer store
checks on every hit). Resolvers report what they touch; the
operation policy reports the operation's type and errors. Anything not reported as fixed is
not: the verdict starts undecided, and only a query that ended without errors makes it
cacheable.
"""

from __future__ import annotations

import math

from gateway.jobs.cache import running_expiry
from gateway.jobs.versions import SnapshotVersions, Version, version_of
from gateway.model import Job

__all__ = ["Cacheability"]


class Cacheability:
    """What one operation's execution said about its answer. Single-threaded (one event loop).

    `lifetime` starts at the longest an answer may be kept (the finished-snapshot ttl: an
    answer never outlives the snapshot it was made from); fields that stay right only for a
    while shorten it (`keep_at_most`), fields that never stay right forbid keeping it
    (`forbid`).
    """

    __slots__ = (
        "_ended",
        "_forbidden",
        "_running_ttl",
        "lifetime",
        "operation",
        "snapshots",
        "until",
    )

    def __init__(self, lifetime: float, *, running_ttl: float = 0.0) -> None:
        self.lifetime = lifetime
        #: Seconds a running snapshot is served from the cache after it was fetched (0: not
        #: cached, so an answer that reads one may not be kept).
        self._running_ttl = running_ttl
        #: The wall-clock time (Unix seconds) the answer stops being right at the latest: the
        #: earliest expiry of the running snapshots it read (infinity when it read none).
        self.until = math.inf
        #: job id -> version of each running snapshot the answer read.
        self.snapshots: dict[str, Version] = {}
        #: Why the answer may not be kept (the first reason), None while nothing forbade it.
        self._forbidden: str | None = None
        self._ended = False
        #: The operation as the access log names it (`query Q`), once it ended.
        self.operation: str | None = None

    def forbid(self, reason: str) -> None:
        """The answer depends on something that moves (a running job, the clock...)."""
        if self._forbidden is None:
            self._forbidden = reason

    def keep_at_most(self, seconds: float) -> None:
        """The answer stays right for `seconds` more (a signed URL's share of its validity)."""
        if seconds <= 0 or math.isnan(seconds):
            self.forbid("an answer that is right for no time")
        self.lifetime = min(self.lifetime, seconds)

    def read_running(self, job: Job, versions: SnapshotVersions) -> None:
        """The answer shows `job`, a running snapshot: it stays right until the snapshot
        expires from the cache, and while the process holds no newer one."""
        if self._running_ttl <= 0:
            self.forbid("a running job (its snapshots are not cached)")
            return
        if not versions.read(job):
            self.forbid("a running job whose snapshot was replaced already")
            return
        version = version_of(job)
        if self.snapshots.setdefault(job.id, version) != version:
            self.forbid("two snapshots of one running job")
            return
        self.until = min(self.until, running_expiry(job.fetched_at, self._running_ttl))

    def ended(self, operation_type: str, operation: str | None, errors: int) -> None:
        """The operation ended: only a query without errors may be kept."""
        self._ended = True
        self.operation = operation
        if operation_type != "query":
            self.forbid(f"a {operation_type} operation")
        elif errors:
            self.forbid("an answer with errors")

    @property
    def reason(self) -> str | None:
        """Why the answer may not be kept; None when it may."""
        if not self._ended:
            return "no operation ended"
        return self._forbidden

    @property
    def cacheable(self) -> bool:
        return self._ended and self._forbidden is None and self.lifetime > 0
