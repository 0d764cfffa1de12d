"""The root Query: jobs by id, through the request's loader."""

from __future__ import annotations

import asyncio
from typing import Annotated, cast

import strawberry
from strawberry.types import Info

from gateway import errors, model
from gateway.api.context import Context
from gateway.api.types import Job, Node


async def _load(context: Context, job_id: str) -> Job | None:
    context.require_read()
    job = await context.jobs.load(job_id)
    # Another tenant's job is answered as a missing one: null, after the same lookup (the
    # snapshot is fetched and cached whoever asks), so neither the answer nor its timing
    # tells that it exists.
    visible = job if job is not None and context.visible(job) else None
    context.touched(visible)
    return context.views.of(visible) if visible is not None else None


@strawberry.type(description="Read smart-production jobs of the MPS account behind this gateway.")
class Query:
    @strawberry.field(
        description="One job by id; null when the upstream knows no such smart-production job, or "
        "when the caller may not see it (another tenant's job answers exactly as a missing "
        "one). Needs the scope jobs:read (or jobs:read:all), else FORBIDDEN. "
        "A malformed id (empty, over 64 characters, or characters other than letters, digits, "
        "- and _) is an INVALID_JOB_ID error."
    )
    async def job(
        self,
        info: Info[Context, None],
        id: Annotated[strawberry.ID, strawberry.argument(description="The job id.")],
    ) -> Job | None:
        return await _load(info.context, id)

    @strawberry.field(
        description="Any object by its id (Relay's refetch entry point); jobs are the only "
        "objects, so this is job(id) typed as a Node (null for a job the caller may not see)."
    )
    async def node(
        self,
        info: Info[Context, None],
        id: Annotated[strawberry.ID, strawberry.argument(description="The object's id.")],
    ) -> Node | None:
        return await _load(info.context, id)

    @strawberry.field(
        description="Several jobs by id: one entry per id, in order (duplicates included). An "
        "entry is null when there is no such job or the caller may not see it, or when that "
        "id failed: then an error at the entry's path says why, and the other entries are "
        "served. More ids than the gateway's limit (100 by default) is a TOO_MANY_IDS error."
    )
    async def jobs(
        self,
        info: Info[Context, None],
        ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(description="The job ids, in the order wanted."),
        ],
    ) -> list[Job | None]:
        context = info.context
        if len(ids) > context.max_ids:
            raise errors.TooManyIds(received=len(ids), limit=context.max_ids)
        context.require_read()
        loader = context.jobs
        # The loader's futures themselves, not a coroutine per id: gather would wrap each
        # coroutine in a task, a hundred of them for a full list.
        outcomes = await asyncio.gather(
            *(loader.load(job_id) for job_id in ids), return_exceptions=True
        )
        # None stays None (no such job, or one the caller may not see), and graphql-core turns
        # an Exception in a list into an error at that entry's path alone: hence the cast.
        entries = [
            (outcome if context.visible(outcome) else None)
            if isinstance(outcome, model.Job)
            else outcome
            for outcome in outcomes
        ]
        for entry in entries:
            context.touched(entry)
        return cast(
            list[Job | None],
            [context.views.of(e) if isinstance(e, model.Job) else e for e in entries],
        )
