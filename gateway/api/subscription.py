"""Subscriptions: follow a job until it finishes, over WebSocket (graphql-transport-ws).

A subscription polls through the shared fetcher, so its cost is the cache's, not the number of
subscribers: however many clients follow one running job, the upstream sees at most one call per
`GATEWAY_CACHE_RUNNING_TTL`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated

import strawberry
from strawberry.types import Info

from gateway import errors, model
from gateway.api.arguments import Range
from gateway.api.context import Context
from gateway.api.types import Job

#: Seconds between two polls of one subscription.
INTERVAL = Range(0.5, 60.0, unit="seconds")
#: Consecutive passing failures tolerated at the least before one is reported.
MIN_FAILURES = 3


def _fingerprint(job: model.Job) -> Mapping[str, str]:
    """What makes two snapshots different to a client: every upstream field but RequestId."""
    return {name: value for name, value in job.raw.items() if name != "RequestId"}


@strawberry.type(description="Live updates of jobs.")
class Subscription:
    @strawberry.subscription(
        description="The job now, then each time it changes, until it finishes (the last "
        "event has isFinished true, then the subscription completes). A job that does not "
        "exist, or that the caller may not see, gives one null event. Polls that fail for a "
        "passing reason (throttling, budget, an unavailable upstream) are retried at the next "
        "interval for about one request deadline; then, and on any other failure, the "
        "subscription ends with the error."
    )
    async def job_updates(
        self,
        info: Info[Context, None],
        id: Annotated[strawberry.ID, strawberry.argument(description="The job id.")],
        interval_seconds: Annotated[
            float,
            strawberry.argument(
                description=f"How long to wait between two polls of the job, {INTERVAL}; "
                "outside that range the subscription ends at once with INVALID_ARGUMENT."
            ),
        ] = 2.0,
    ) -> AsyncGenerator[Job | None, None]:
        context = info.context
        # Checked before the first poll: a refused subscription costs no upstream call.
        interval = INTERVAL.check("intervalSeconds", interval_seconds)
        context.require_read()
        last: Mapping[str, str] | None = None
        # Passing failures are retried quietly for about one request deadline, then reported:
        # a job that keeps failing must not be polled in silence forever.
        failures_allowed = max(MIN_FAILURES, math.ceil(context.timeout / interval))
        failures = 0
        # One fair-queue key for all polls of this subscription: its caller's tenant.
        requester = context.requester
        # Counted while it runs, however it ends (finished, failed, or the client left).
        with context.observer.subscription(context.transport):
            while True:
                deadline = time.monotonic() + context.timeout
                [outcome] = await context.fetcher.get_many([id], deadline, requester=requester)
                if isinstance(outcome, errors.GatewayError) and outcome.retryable:
                    failures += 1
                    if failures >= failures_allowed:
                        raise outcome
                    await asyncio.sleep(interval)
                    continue
                failures = 0
                if isinstance(outcome, Exception):
                    raise outcome
                if outcome is None or not context.visible(outcome):
                    # Another tenant's job ends as a missing one does: one null.
                    yield None
                    return
                fingerprint = _fingerprint(outcome)
                if fingerprint != last:
                    last = fingerprint
                    yield Job.from_model(outcome)
                if outcome.state.is_terminal:
                    return
                await asyncio.sleep(interval)
