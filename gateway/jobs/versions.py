"""`SnapshotVersions`: which snapshot of each job this process holds now, so that an answer
built from a running job's snapshot is served again only while that snapshot is still the one
a new execution would read.

A version is the snapshot's `(fetched_at, request_id)`: equal for every copy of one upstream
answer (a shared cache's reads decode new objects of the same answer), different for the next
one. The fetcher reports every snapshot it stores (`stored`, authoritative: what the cache now
holds) and answers report the snapshots they read (`read`, newest wins). A kept answer records
the versions it read and is served only while each is still current (`current`).

Bounded (least recently used go first): a job whose version was forgotten has none, and an
answer that read it is not served again (a miss, never a stale answer).
"""

from __future__ import annotations

import itertools
from typing import Final

from cachetools import LRUCache

from gateway.model import Job

__all__ = ["SnapshotVersions", "Version"]

#: `(fetched_at, request_id)` of a snapshot; `(-1.0, "gone:N")` after a "no such job".
Version = tuple[float, str]

#: Jobs whose version is remembered.
MAX_JOBS: Final = 65_536


def version_of(job: Job) -> Version:
    return (job.fetched_at, job.request_id or "")


class SnapshotVersions:
    """See the module docstring. Single-threaded (one event loop); every method is O(1)."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self._versions: LRUCache[str, Version] = LRUCache(maxsize=max(1, max_jobs))
        self._gone = itertools.count()

    def stored(self, job_id: str, job: Job | None) -> None:
        """The process's cache now holds `job` for `job_id` (None: no such job): any answer
        built from an earlier snapshot is outdated, even one fetched later elsewhere."""
        if job is None:
            self._versions[job_id] = (-1.0, f"gone:{next(self._gone)}")
        else:
            self._versions[job_id] = version_of(job)

    def read(self, job: Job) -> bool:
        """An answer read `job`: remember it unless a newer snapshot is known. Whether `job` is
        the current snapshot (False: the answer is outdated already and must not be kept)."""
        version = version_of(job)
        known = self._versions.get(job.id)
        if known is None or version[0] > known[0]:
            self._versions[job.id] = version
            return True
        return known == version

    def current(self, job_id: str) -> Version | None:
        """The version of the snapshot of `job_id` this process holds, None when unknown."""
        return self._versions.get(job_id)

    def __len__(self) -> int:
        return len(self._versions)
