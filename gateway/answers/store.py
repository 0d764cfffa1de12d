"""`AnswerStore`: kept answers in process memory, bounded in bytes, that a flood cannot flush.

A segmented LRU (SLRU) with a doorkeeper, so that many distinct requests asked once (an
attacker's random variables, a crawler) cannot push out the answers that are asked again and
again:

- A key is admitted on its second sighting: the first only writes its digest in the
  doorkeeper (a bounded LRU of digests).
- Admitted answers enter the *probation* segment (a fifth of the bytes); an answer read again
  while there moves to the *protected* segment (the other four fifths). What protected pushes
  out goes back to probation; what probation pushes out is gone. A flood of new keys churns
  probation only.
- An answer over `max_answer_bytes` is never kept; every answer is counted at its size plus a
  fixed overhead, so the bound holds whatever the mix.

Each answer has an expiry (wall clock): an expired one is a miss and is dropped when seen (and
its key counts as seen, so that its next answer is admitted at once). `drop` removes an answer
its caller found outdated (a running snapshot it was built from was replaced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cachetools import LRUCache

from gateway.jobs.versions import Version

__all__ = ["ENTRY_OVERHEAD", "Answer", "AnswerStore", "StoreStats"]

#: Bytes counted for each kept answer besides its body: the key, the entry, the headers.
ENTRY_OVERHEAD: Final = 256
#: Share of the bytes that answers read at least twice may hold.
PROTECTED_SHARE: Final = 0.8


@dataclass(frozen=True, slots=True)
class Answer:
    """One kept answer: the response body exactly as sent, and what its headers need."""

    body: bytes
    #: The response's Content-Type.
    content_type: bytes
    #: When it stops being right (wall clock, seconds since the epoch).
    expires_at: float
    #: True when nothing in it can change before `expires_at` (finished jobs only); False when
    #: it is right only for a while (a signed URL): then HTTP caches get no `immutable`.
    immutable: bool
    #: Whether the answer depends on the caller (then HTTP caches must keep it private).
    private: bool
    #: The operation as the access log names it (`query Q`).
    operation: str | None
    #: The strong ETag of `body`, quoted.
    etag: bytes
    #: The running snapshots it was built from (job id, version): served only while each is
    #: still the one the process holds. Empty for an answer of finished jobs only.
    snapshots: tuple[tuple[str, Version], ...] = ()

    @property
    def size(self) -> int:
        return len(self.body) + ENTRY_OVERHEAD


@dataclass(slots=True)
class StoreStats:
    """Counters for /readyz and the benchmarks."""

    hits: int = 0
    misses: int = 0
    #: Answers offered once only (written in the doorkeeper, not kept).
    first_sightings: int = 0
    admitted: int = 0
    #: Answers refused for their size.
    too_large: int = 0
    #: Answers pushed out of memory by newer ones.
    evicted: int = 0
    expired: int = 0
    #: Answers dropped because a running snapshot they were built from was replaced.
    outdated: int = 0


def _size(answer: Answer) -> int:
    return answer.size


class _Segment(LRUCache[bytes, Answer]):
    """An LRU bounded in bytes that hands what it pushes out to `spill`."""

    def __init__(self, max_bytes: int, spill: Callable[[bytes, Answer], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=_size)
        self._spill = spill

    def popitem(self) -> tuple[bytes, Answer]:
        key, answer = super().popitem()
        self._spill(key, answer)
        return key, answer


class AnswerStore:
    """See the module docstring. `max_bytes` bounds the answers kept (0 keeps none),
    `max_answer_bytes` the body of one; `doorkeeper_entries` how many first sightings are
    remembered. `clock` is the wall clock of `Answer.expires_at`."""

    def __init__(
        self,
        max_bytes: int,
        *,
        max_answer_bytes: int,
        doorkeeper_entries: int = 65_536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0 or max_answer_bytes < 0:
            raise ValueError(
                f"Expected byte bounds of at least 0, received {max_bytes} and {max_answer_bytes}."
            )
        self.max_bytes = max_bytes
        self.max_answer_bytes = max_answer_bytes
        self.stats = StoreStats()
        self._clock = clock
        protected_bytes = int(max_bytes * PROTECTED_SHARE)
        self._probation = _Segment(max(1, max_bytes - protected_bytes), self._evicted)
        self._protected = _Segment(max(1, protected_bytes), self._demoted)
        self._seen: LRUCache[bytes, bool] = LRUCache(maxsize=max(1, doorkeeper_entries))

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: bytes) -> Answer | None:
        """The answer kept under `key`, unless it expired; a hit in probation is protected."""
        answer = self._protected.get(key)
        if answer is None:
            answer = self._probation.get(key)
            if answer is not None and answer.expires_at > self._clock():
                del self._probation[key]
                self._protect(key, answer)
                self.stats.hits += 1
                return answer
        elif answer.expires_at > self._clock():
            self.stats.hits += 1
            return answer
        if answer is not None:
            self.stats.expired += 1
            self._protected.pop(key, None)
            self._probation.pop(key, None)
            # Asked again after it expired: its next answer is admitted at once (an answer
            # of running jobs lives for a second; a doorkeeper round each time would halve it).
            self._seen[key] = True
        self.stats.misses += 1
        return None

    def drop(self, key: bytes) -> None:
        """Forget the answer kept under `key` (it is outdated); it is admitted again at once."""
        if self._protected.pop(key, None) or self._probation.pop(key, None):
            self.stats.outdated += 1
            self._seen[key] = True

    def offer(self, key: bytes, answer: Answer) -> bool:
        """Keep `answer` if its key was seen before (and it fits); whether it was kept."""
        if not self._fits(answer):
            return False
        if self._seen.pop(key, None) is None:
            self._seen[key] = True
            self.stats.first_sightings += 1
            return False
        self._admit(key, answer)
        return True

    def adopt(self, key: bytes, answer: Answer) -> None:
        """Keep `answer`, found in the shared store: another process admitted it already."""
        if self._fits(answer):
            self._admit(key, answer)

    def _fits(self, answer: Answer) -> bool:
        if not self.enabled:
            return False
        if len(answer.body) > self.max_answer_bytes or answer.size > self._probation.maxsize:
            self.stats.too_large += 1
            return False
        return True

    def _admit(self, key: bytes, answer: Answer) -> None:
        if key in self._protected or key in self._probation:
            return
        self.stats.admitted += 1
        self._probation[key] = answer

    def _protect(self, key: bytes, answer: Answer) -> None:
        if answer.size <= self._protected.maxsize:
            self._protected[key] = answer

    def _demoted(self, key: bytes, answer: Answer) -> None:
        if answer.size <= self._probation.maxsize:
            self._probation[key] = answer

    def _evicted(self, key: bytes, answer: Answer) -> None:
        self.stats.evicted += 1

    @property
    def bytes(self) -> int:
        """Bytes the kept answers count for (bodies and overhead)."""
        return int(self._probation.currsize + self._protected.currsize)

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)
