"""`JobViews`: the GraphQL view of each snapshot, built once and shared by the requests that
read it.

A cached snapshot is read by request after request; building its `Job` (and the result's files,
with their URLs and content types) anew for each one would repeat the same work. A view holds
nothing of a request (resolvers that need the request read it from their `info`), so sharing one
is safe. Views are keyed by the snapshot object itself: a newer snapshot of the same job is
another object and gets its own view.
"""

from __future__ import annotations

from cachetools import LRUCache

from gateway import model
from gateway.api.types import Job

DEFAULT_MAX_ENTRIES = 4096


class JobViews:
    """A bounded, least-recently-used map from snapshot to view, one per process."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        # id(snapshot) -> (snapshot, view). The snapshot is kept so that its id cannot be
        # reused by another object while the entry lives; a hit checks it is the same object.
        self._views: LRUCache[int, tuple[model.Job, Job]] = LRUCache(maxsize=max_entries)

    def of(self, job: model.Job) -> Job:
        key = id(job)
        entry = self._views.get(key)
        if entry is not None and entry[0] is job:
            return entry[1]
        view = Job.from_model(job)
        self._views[key] = (job, view)
        return view

    def __len__(self) -> int:
        return len(self._views)
