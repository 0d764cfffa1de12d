"""The per-request context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.loader import JobLoader
from gateway.oss import OssPresigner


@dataclass(slots=True)
class Context:
    """Made anew for each GraphQL request (or WebSocket operation): its loader's memo is private
    to that request, and `deadline` (on the fetcher's clock) bounds its waits for the upstream."""

    jobs: JobLoader
    deadline: float
    max_ids: int
    #: The process-wide fetcher, for subscriptions: they poll, and a loader's memo would
    #: answer every poll with the first snapshot.
    fetcher: JobFetcher
    #: Seconds each poll of a subscription may wait for the upstream.
    poll_deadline: float
    #: The process-wide signer of OSS download URLs (`signedUrl` fields); None signs nothing.
    presigner: OssPresigner | None = None
