"""The simulator's jobs: static ones (the demo set, test-planted custom ones) and submitted ones.

A job answers QueryIProductionJob with `fields(now)`: the response fields except RequestId. Static
jobs answer the same fields forever. A submitted job's state is derived from its submit time and the
clock at each query, with no background task (the simulator must also run under
`httpx.ASGITransport`, which runs no lifespan):

    Queuing   for queue_seconds after the submit
    Analysing for run_seconds after that
    Success   (or Fail when the Input key contains "fail", any case) from then on
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import json5

from gateway.model import JobState, JsonValue
from gateway.simulator.algorithms import ALGORITHMS
from gateway.simulator.oss import parse_oss_url, render_key

# The upstream's `State` texts: the gateway's model names them once.
QUEUING = JobState.QUEUING.value
ANALYSING = JobState.ANALYSING.value
SUCCESS = JobState.SUCCESS.value
FAIL = JobState.FAIL.value


def encode_json(value: JsonValue) -> str:
    """Compact JSON, as the upstream writes its JSON-in-a-string fields."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def success_result(files: list[str]) -> str:
    """A successful `Result`: JSON whose `Data` is itself JSON text (decoded twice by readers)."""
    data = encode_json({"result": [{"file": name} for name in files]})
    return encode_json({"Code": "Success", "Data": data, "Message": "Successful."})


def failure_result(code: str, message: str) -> str:
    return encode_json({"Code": code, "Message": message})


class JobRecord(Protocol):
    @property
    def job_id(self) -> str: ...

    def fields(self, now: float) -> dict[str, JsonValue]:
        """The QueryIProductionJob fields of this job at `now`, RequestId excepted."""
        ...

    def summary(self, now: float) -> dict[str, JsonValue]:
        """The job's entry in `GET /_simulator/jobs`."""
        ...


@dataclass(frozen=True, slots=True)
class StaticJob:
    """A job whose answer never changes: a demo job, or one planted through the admin API.

    `answer` is sent verbatim (after a fresh RequestId, unless it carries its own).
    """

    job_id: str
    answer: Mapping[str, JsonValue]
    source: Literal["demo", "custom"] = "demo"
    #: What is deliberately wrong with this job's answer, or None for an honest one.
    quirk: str | None = None

    def fields(self, now: float) -> dict[str, JsonValue]:
        return dict(self.answer)

    def summary(self, now: float) -> dict[str, JsonValue]:
        name = self.answer.get("FunctionName")
        state = self.answer.get("State")
        return {
            "id": self.job_id,
            "functionName": name if isinstance(name, str) else None,
            "state": state if isinstance(state, str) else None,
            "quirk": self.quirk,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """A job created by SubmitIProductionJob; see the module docstring for its lifecycle."""

    job_id: str
    function_name: str
    submitted_at: float
    queue_seconds: float
    run_seconds: float
    pipeline_id: str
    input: str | None = None
    output: str | None = None
    job_params: str | None = None
    user_data: str | None = None

    def state(self, now: float) -> str:
        elapsed = now - self.submitted_at
        if elapsed < self.queue_seconds:
            return QUEUING
        if elapsed < self.queue_seconds + self.run_seconds:
            return ANALYSING
        return FAIL if self.fails else SUCCESS

    @property
    def fails(self) -> bool:
        parsed = parse_oss_url(self.input) if self.input else None
        return parsed is not None and "fail" in parsed.key.lower()

    @property
    def timestamp(self) -> str:
        # `{timestamp}` in milliseconds: the documented CaptionExtraction file name
        # `<md5>-161121379****.srt` carries a 13-digit (millisecond) Unix time.
        return str(int(self.submitted_at * 1000))

    def result_files(self) -> list[str]:
        """The object keys a successful run writes, from the Output template."""
        algorithm = ALGORITHMS[self.function_name]
        parsed_output = parse_oss_url(self.output) if self.output else None
        template = (
            parsed_output.key
            if parsed_output
            else f"iproduction/{{source}}-{{timestamp}}-{{sequenceId}}.{algorithm.output_extension}"
        )
        parsed_input = parse_oss_url(self.input) if self.input else None
        source = parsed_input.file_stem if parsed_input else self.job_id
        if self.function_name == "CaptionExtraction" and _wants_separate_captions(self.job_params):
            return [
                render_key(
                    template,
                    source=source,
                    timestamp=self.timestamp,
                    sequence_id=index,
                    result_type=result_type,
                )
                for index, result_type in enumerate(("zh", "en"))
            ]
        return [
            render_key(template, source=source, timestamp=self.timestamp, sequence_id=index)
            for index in range(algorithm.files)
        ]

    def fields(self, now: float) -> dict[str, JsonValue]:
        state = self.state(now)
        fields: dict[str, JsonValue] = {
            "JobId": self.job_id,
            "FunctionName": self.function_name,
            "State": state,
        }
        if self.input is not None:
            fields["Input"] = self.input
        if self.output is not None:
            fields["Output"] = self.output
        fields["PipelineId"] = self.pipeline_id
        if self.job_params is not None:
            fields["JobParams"] = self.job_params
        # MPS writes a missing UserData as the text "null" (the documented example answer has
        # `"UserData":"null"`): a Java null turned into a string on the way out.
        fields["UserData"] = self.user_data if self.user_data is not None else "null"
        if state == ANALYSING:
            fields["Result"] = ""
        elif state == SUCCESS:
            fields["Result"] = success_result(self.result_files())
        elif state == FAIL:
            fields["Result"] = failure_result(
                "InvalidParameter.ResourceContentBad",
                f'The resource content of "{self.input}" is bad: it could not be decoded.',
            )
        # Queuing: no Result at all, as a job that has not started has none.
        return fields

    def summary(self, now: float) -> dict[str, JsonValue]:
        return {
            "id": self.job_id,
            "functionName": self.function_name,
            "state": self.state(now),
            "quirk": None,
            "source": "submitted",
        }


def _wants_separate_captions(job_params: str | None) -> bool:
    if not job_params:
        return False
    try:
        params = json5.loads(job_params)
    except ValueError:
        return False
    return isinstance(params, dict) and params.get("sep") is True


class JobStore:
    """Every job the simulator knows, in insertion order (demo set first).

    The jobs given at construction (the demo set) are kept until deleted; of the jobs put later,
    at most `max_added` are kept, the oldest forgotten first, so a long run stays bounded.
    """

    def __init__(self, jobs: Iterable[JobRecord] = (), *, max_added: int = 100_000) -> None:
        self._jobs: dict[str, JobRecord] = {job.job_id: job for job in jobs}
        self._max_added = max_added
        # Ids of the jobs put after construction, oldest first (a dict keeps insertion order).
        self._added: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def put(self, job: JobRecord) -> None:
        """Store a job, replacing any job with the same id."""
        self._jobs[job.job_id] = job
        self._added.pop(job.job_id, None)
        self._added[job.job_id] = None
        while len(self._added) > self._max_added:
            oldest = next(iter(self._added))
            del self._added[oldest]
            del self._jobs[oldest]

    def delete(self, job_id: str) -> bool:
        """Forget a job; False if there was none with that id."""
        self._added.pop(job_id, None)
        return self._jobs.pop(job_id, None) is not None

    def listing(self, now: float) -> list[dict[str, JsonValue]]:
        return [job.summary(now) for job in self._jobs.values()]
