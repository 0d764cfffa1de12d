"""`Cacheability`: whether the answer of one operation may be kept, and for how long.

An answer may be kept only when everything that made it is fixed: the operation is a query,
it answered no error, every job it touched was finished (SUCCESS or FAIL: such a job never
changes), and no field it resolved moves with time. Resolvers report what they touch; the
operation policy reports the operation's type and errors. Anything not reported as fixed is
not: the verdict starts undecided, and only a query that ended without errors makes it
cacheable.
"""

from __future__ import annotations

import math

__all__ = ["Cacheability"]


class Cacheability:
    """What one operation's execution said about its answer. Single-threaded (one event loop).

    `lifetime` starts at the longest an answer may be kept (the finished-snapshot ttl: an
    answer never outlives the snapshot it was made from); fields that stay right only for a
    while shorten it (`keep_at_most`), fields that never stay right forbid keeping it
    (`forbid`).
    """

    __slots__ = ("_ended", "_forbidden", "lifetime", "operation")

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
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
