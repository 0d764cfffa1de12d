"""The two actions: QueryIProductionJob and SubmitIProductionJob.

Each takes the request's parameters (already authenticated and admitted) and returns the response
fields, RequestId excepted, or raises `ApiError`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from gateway.model import JsonValue
from gateway.simulator import errors
from gateway.simulator.algorithms import ALGORITHMS
from gateway.simulator.jobs import SubmittedJob, encode_json
from gateway.simulator.oss import parse_oss_url
from gateway.simulator.state import Simulator

# `mns://<account id>.mns.<region>[-internal].aliyuncs.com/queues|topics/<name>`; digits or `*`
# in the account id, as the documentation masks it.
_MNS_URL = re.compile(
    r"mns://[0-9*]+\.mns\.[a-z0-9-]+\.aliyuncs\.com/(?:queues|topics)/[A-Za-z0-9][A-Za-z0-9-]*"
)


def query_job(simulator: Simulator, params: Mapping[str, str]) -> dict[str, JsonValue]:
    """The job's fields; for an unknown id only `JobId` (HTTP 200), as MPS answers for an id that
    is not a smart-production job (docs/upstream.md section 1.7)."""
    job_id = params.get("JobId", "")
    if not job_id:
        # The doc marks JobId optional (the API gateway lets it through), but the service can do
        # nothing without it. We answer with the gateway's `Missing{Name}` form, the same as for
        # FunctionName, so every "you forgot a parameter" reads alike; the real service's code here
        # is not documented (it could also be InvalidParameter.NullValue, doc 29254).
        raise errors.missing_parameter("JobId")
    now = simulator.clock()
    job = simulator.find(job_id, now)
    if job is None:
        return {"JobId": job_id}
    return job.fields(now)


def submit_job(simulator: Simulator, params: Mapping[str, str]) -> dict[str, JsonValue]:
    """Create a job that will run through Queuing -> Analysing -> Success|Fail.

    FunctionName is required and must be a documented algorithm; Input and Output, when given,
    must be MPS-style OSS URLs (`oss://<bucket>.oss-<region>.aliyuncs.com/<key>`), NotifyUrl an
    MNS queue or topic. ModelId and ScheduleParams are taken and not shown again (no query field
    carries them).
    """
    function_name = params.get("FunctionName", "")
    if not function_name:
        # The only parameter the API metadata marks required: the API gateway rejects its absence
        # before the service sees the call, with the `Missing{Name}` form (docs/upstream.md
        # section 4.2).
        raise errors.missing_parameter("FunctionName")
    if function_name not in ALGORITHMS:
        raise errors.invalid_parameter("FunctionName")
    for name in ("Input", "Output"):
        value = params.get(name)
        if value is not None and parse_oss_url(value) is None:
            raise errors.invalid_parameter(name)
    notify_url = params.get("NotifyUrl")
    if notify_url and _MNS_URL.fullmatch(notify_url) is None:
        # MNS queues (and topics) only (docs/upstream.md section 2.1).
        raise errors.invalid_parameter("NotifyUrl")
    settings = simulator.settings
    job = SubmittedJob(
        job_id=uuid.uuid4().hex,  # never seeded: a restarted simulator must not reuse ids
        function_name=function_name,
        submitted_at=simulator.clock(),
        queue_seconds=settings.queue_seconds,
        run_seconds=settings.run_seconds,
        pipeline_id=params.get("PipelineId") or simulator.default_pipeline_id,
        input=params.get("Input"),
        output=params.get("Output"),
        job_params=params.get("JobParams"),
        user_data=params.get("UserData"),
    )
    simulator.store.put(job)
    # The documented answer (docs/upstream.md section 2.2); its State is that of the submission,
    # not of the job.
    result: dict[str, JsonValue] = {
        "Code": "Success",
        "Details": [],
        "FunctionName": function_name,
        "JobId": job.job_id,
        "Message": "success",
        "State": "Success",
        "Type": "IProduction",
    }
    return {"JobId": job.job_id, "Result": encode_json(result)}
