"""Demo jobs that move: slots that start a new run, a job of its own, again and again.

Each slot starts a run every `period` (three phases of `SimulatorSettings.demo_phase_seconds`,
20 s by default), and each run lives as a submitted job does:

    Queuing   for one phase from its start
    Analysing for the next phase
    Success   (Fail for the slot whose input is a broken upload) from then on, forever

A run never starts again under its id, because a job that has finished never changes: the
gateway keeps a finished snapshot for a day, and a job that started over after it had finished
would be shown finished all that time. So what moves is the slot; each run is a new job, the
next one starting a phase after the last finished. Run n of a slot has the id
`<24 hex digits of the slot, from the seed><n as 8 hex digits>`: run 0 of the first slot has the
same id at every start for a given seed (the start banner and the README name it), each run's
UserData names the next run's id, and `GET /_simulator/jobs` lists each slot's current run.

Slot k is k phases ahead: at any time one slot is Queuing, one Analysing, one finished. Run 0 of
the first slot starts when the simulator is made (`origin`). Runs are derived from the clock at
each query, like submitted jobs, with no task and no memory: any run since the origin answers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gateway.model import JsonValue
from gateway.simulator.algorithms import ALGORITHMS
from gateway.simulator.jobs import SubmittedJob, encode_json

#: Hex digits of the run number at the end of a run's id.
RUN_DIGITS = 8
#: Phases in a slot's period: Queuing, Analysing, and finished while it is the current run.
PHASES = 3

_BUCKET_IN = "oss://media-uploads-sh.oss-cn-shanghai.aliyuncs.com"
_BUCKET_OUT = "oss://media-results-sh.oss-cn-shanghai.aliyuncs.com"


@dataclass(frozen=True, slots=True)
class Slot:
    """What each run of a slot is submitted with."""

    function_name: str
    input: str
    output: str


#: In lead order: slot k is k phases ahead of the origin. The last one's input is a broken
#: upload ("fail" in its key): its runs end in Fail.
SLOTS: tuple[Slot, ...] = (
    Slot(
        "Cover",
        f"{_BUCKET_IN}/campaign/summer/product-launch.mp4",
        f"{_BUCKET_OUT}/cover/{{source}}-{{timestamp}}-{{sequenceId}}.jpg",
    ),
    Slot(
        "CaptionExtraction",
        f"{_BUCKET_IN}/lectures/keynote-clip.mp4",
        f"{_BUCKET_OUT}/captionextraction/{{source}}-{{timestamp}}.srt",
    ),
    Slot(
        "AudioMixing",
        f"{_BUCKET_IN}/ugc/incoming/podcast-ep12-failed-upload.mp3",
        f"{_BUCKET_OUT}/audiomixing/{{source}}-{{timestamp}}-{{sequenceId}}.m4a",
    ),
)


def _stems(seed: int) -> list[str]:
    """The 24 hex digits that start the ids of each slot's runs, for `seed`."""
    rng = random.Random(f"{seed}:cycling")
    return [f"{rng.getrandbits(96):024x}" for _ in SLOTS]


def moving_demo_job_id(seed: int) -> str:
    """The id of the first slot's run 0 for `seed`: Queuing when the simulator starts."""
    return _stems(seed)[0] + "0" * RUN_DIGITS


@dataclass(frozen=True, slots=True)
class CyclingRun:
    """One run of a slot: it answers as the submitted job it is, and is listed with its cycle."""

    job: SubmittedJob
    run: int
    #: When the slot's next run starts (the slot's clock).
    next_run_at: float
    next_job_id: str

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def fields(self, now: float) -> dict[str, JsonValue]:
        return self.job.fields(now)

    def summary(self, now: float) -> dict[str, JsonValue]:
        job = self.job
        elapsed = now - job.submitted_at
        phase = job.queue_seconds
        state_ends = None if elapsed >= 2 * phase else (math.floor(elapsed / phase) + 1) * phase
        cycle: dict[str, JsonValue] = {
            "run": self.run,
            # None once finished: a finished run never changes again.
            "stateEndsInSeconds": None if state_ends is None else round(state_ends - elapsed, 3),
            "nextJobId": self.next_job_id,
            "nextRunInSeconds": round(max(0.0, self.next_run_at - now), 3),
        }
        return {
            "id": job.job_id,
            "functionName": job.function_name,
            "state": job.state(now),
            "quirk": None,
            "source": "cycling",
            "cycle": cycle,
        }


class DemoCycles:
    """The cycling slots of one simulator (see the module docstring); stateless but for the
    origin, so any number of queries of any run cost nothing to keep."""

    def __init__(self, seed: int, *, phase_seconds: float, origin: float) -> None:
        self.phase = phase_seconds
        self.period = PHASES * phase_seconds
        self.origin = origin
        self._stems = _stems(seed)
        self._slot_of_stem = {stem: index for index, stem in enumerate(self._stems)}
        self.pipeline_id = f"{random.Random(f'{seed}:cycling-pipeline').getrandbits(128):032x}"

    def run_id(self, slot: int, run: int) -> str:
        return f"{self._stems[slot]}{run:0{RUN_DIGITS}x}"

    def get(self, job_id: str, now: float) -> CyclingRun | None:
        """The run `job_id` names, or None: not a run's id, or a run that has not started."""
        stem, digits = job_id[:-RUN_DIGITS], job_id[-RUN_DIGITS:]
        slot = self._slot_of_stem.get(stem)
        if slot is None or len(digits) != RUN_DIGITS:
            return None
        try:
            run = int(digits, 16)
        except ValueError:
            return None
        # One spelling per run (lower-case, as the ids are written), so one job per id.
        if self.run_id(slot, run) != job_id or self._start(slot, run) > now:
            return None
        return self._run(slot, run)

    def current(self, now: float) -> list[CyclingRun]:
        """Each slot's latest run started by `now` (none for a slot whose run 0 is ahead)."""
        runs = []
        for slot in range(len(SLOTS)):
            run = math.floor((now - self._start(slot, 0)) / self.period)
            if run >= 0:
                runs.append(self._run(slot, run))
        return runs

    def listing(self, now: float) -> list[dict[str, JsonValue]]:
        return [run.summary(now) for run in self.current(now)]

    def _start(self, slot: int, run: int) -> float:
        return self.origin - slot * self.phase + run * self.period

    def _run(self, slot: int, run: int) -> CyclingRun:
        spec = SLOTS[slot]
        next_job_id = self.run_id(slot, run + 1)
        job = SubmittedJob(
            job_id=self.run_id(slot, run),
            function_name=spec.function_name,
            submitted_at=self._start(slot, run),
            queue_seconds=self.phase,
            run_seconds=self.phase,
            pipeline_id=self.pipeline_id,
            input=spec.input,
            output=spec.output,
            job_params=ALGORITHMS[spec.function_name].params,
            user_data=encode_json({"demo": "cycling", "run": run, "nextJobId": next_job_id}),
        )
        return CyclingRun(
            job=job,
            run=run,
            next_run_at=self._start(slot, run + 1),
            next_job_id=next_job_id,
        )
