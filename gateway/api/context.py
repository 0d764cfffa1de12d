"""The per-request context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.loader import JobLoader
from gateway.oss import OssPresigner


@dataclass(slots=True)
class Context:
    """Made anew for each GraphQL request (or WebSocket operation): its loader's memo is private
    to that request, and `deadline` (on the fetcher's clock) bounds its waits for the upstream."""

    #: The process-wide fetcher behind the loader; subscriptions poll it directly, since a
    #: loader's memo would answer every poll with the first snapshot.
    fetcher: JobFetcher
    deadline: float
    max_ids: int
    #: Seconds each poll of a subscription may wait for the upstream.
    poll_deadline: float
    #: The process-wide signer of OSS download URLs (`signedUrl` fields); None signs nothing.
    presigner: OssPresigner | None = None
    _jobs: JobLoader | None = field(default=None, repr=False)

    @property
    def jobs(self) -> JobLoader:
        """The request's loader, made on first use: a request that needs none (a cached
        finished job, introspection) does not pay for one."""
        if self._jobs is None:
            self._jobs = JobLoader(self.fetcher, self.deadline)
        return self._jobs
