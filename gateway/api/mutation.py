"""The root Mutation: `submitJob`, through the process's submitter."""

from __future__ import annotations

from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway import errors
from gateway.api.context import Context
from gateway.api.types import Job
from gateway.callers.caller import Scope
from gateway.model import JsonValue
from gateway.submit.request import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PARAMS_BYTES,
    MAX_USER_DATA_BYTES,
    SubmitJobSpec,
    check_idempotency_key,
    check_submission,
)


@strawberry.input(
    description="A smart-production job to submit (SubmitIProductionJob). Every field is "
    "checked before the upstream is called: a wrong one is an INVALID_ARGUMENT error whose "
    "extensions.argument names it (input.functionName, input.input, ...)."
)
class SubmitJobInput:
    function_name: str = strawberry.field(
        description="The algorithm, e.g. ImageCartoonize or CaptionExtraction (the Algorithm "
        "enum lists those documented; others are passed on): 1 to 64 letters and digits."
    )
    input: str = strawberry.field(
        description="The object to process: an oss:// URL of a bucket in the gateway's region, "
        "oss://<bucket>.oss-<region>.aliyuncs.com/<key> (or oss://<bucket>/<key>)."
    )
    output: str = strawberry.field(
        description="Where to write the results: an oss:// URL template in the gateway's "
        "region; placeholders such as {source}, {timestamp}, {sequenceId} and {resultType} are "
        "kept verbatim for the upstream to fill."
    )
    params: JSON | None = strawberry.field(
        default=None,
        description=f"The algorithm's parameters (JobParams): a JSON object of at most "
        f'{MAX_PARAMS_BYTES} bytes, e.g. {{"mode": "gif"}}.',
    )
    user_data: str | None = strawberry.field(
        default=None,
        description="Your own text, returned as Job.userData. The gateway records the "
        f"submitting tenant next to it, and the two together must fit in {MAX_USER_DATA_BYTES} "
        "bytes of UTF-8 (about 950 for a short tenant name).",
    )
    pipeline_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The MPS pipeline to queue on (1 to 64 letters, digits, _ and -); the "
        "account's default pipeline without it.",
    )
    notify_url: str | None = strawberry.field(
        default=None,
        description="An MNS queue or topic told when the job ends: "
        "mns://<account id>.mns.<region>.aliyuncs.com/queues/<name>.",
    )
    model_id: str | None = strawberry.field(
        default=None, description="The algorithm's model; the default model without it."
    )
    schedule_params: str | None = strawberry.field(
        default=None,
        description="The upstream's ScheduleParams, passed on as given (the documentation "
        "says to leave it empty).",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Makes a retry safe: the same key from the same tenant within 24 hours "
        "answers the same job and submits nothing again (other parameters with the same key: "
        f"IDEMPOTENCY_KEY_REUSED). 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
        "characters; the Idempotency-Key HTTP header does the same.",
    )


@strawberry.type(description="What submitJob answers.")
class SubmitJobPayload:
    job: Job | None = strawberry.field(
        description="The new job, QUEUING: subscribe to jobUpdates with its id at once. For a "
        "replayed idempotency key, the job as it is now; null only if the upstream no longer "
        "knows it."
    )
    replayed: bool = strawberry.field(
        description="True when the idempotency key had already submitted this job: nothing was "
        "submitted this time."
    )


@strawberry.type(description="Change things: submit smart-production jobs.")
class Mutation:
    @strawberry.mutation(
        description="Submit a smart-production job (needs the jobs:submit scope: FORBIDDEN "
        "otherwise). The job belongs to the caller's tenant. Costs one SubmitIProductionJob "
        "call, drawn from the account's own submit budget (BUDGET_EXHAUSTED with retryAfter "
        "when it has no slot before the deadline). A submission whose upstream answer was lost "
        "is never retried: SUBMIT_OUTCOME_UNKNOWN says the job may exist."
    )
    async def submit_job(
        self,
        info: Info[Context, None],
        input: Annotated[SubmitJobInput, strawberry.argument(description="What to submit.")],
    ) -> SubmitJobPayload:
        context = info.context
        caller = context.caller
        if not caller.may(Scope.SUBMIT):
            raise errors.Forbidden(Scope.SUBMIT.value, "submit jobs")
        if context.submitter is None:
            raise RuntimeError("Expected a context with a submitter, received none.")
        key = _idempotency_key(input.idempotency_key, context.idempotency_key)
        params = cast(JsonValue, input.params)
        spec = SubmitJobSpec(
            function_name=input.function_name,
            input=input.input,
            output=input.output,
            params=params,
            user_data=input.user_data,
            pipeline_id=None if input.pipeline_id is None else str(input.pipeline_id),
            notify_url=input.notify_url,
            model_id=input.model_id,
            schedule_params=input.schedule_params,
        )
        submission = check_submission(spec, tenant=caller.tenant, region=context.region)
        submitted = await context.submitter.submit(submission, key=key, deadline=context.deadline)
        job = None if submitted.job is None else context.views.of(submitted.job)
        return SubmitJobPayload(job=job, replayed=submitted.replayed)


def _idempotency_key(argument: str | None, header: str | None) -> str | None:
    """The submission's key: the argument's, or the header's; both must agree when both are
    given."""
    if argument is not None:
        argument = check_idempotency_key("input.idempotencyKey", argument)
    if header is not None:
        header = check_idempotency_key("Idempotency-Key", header)
    if argument is not None and header is not None and argument != header:
        raise errors.InvalidArgument(
            "input.idempotencyKey",
            "to equal the Idempotency-Key header when both are sent",
            argument,
        )
    return argument if argument is not None else header
