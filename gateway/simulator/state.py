"""`Simulator`: everything one simulator app holds (jobs, counters, faults, nonces, clock).

One instance per app (`create_simulator_app` puts it on `app.state.simulator`), so in-process users
and tests can inspect and steer it directly. Nothing here is module-global.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from gateway.model import JsonValue
from gateway.settings import SimulatorSettings
from gateway.simulator.auth import Authenticator
from gateway.simulator.cycles import DemoCycles
from gateway.simulator.demo import build_demo_jobs
from gateway.simulator.faults import Faults
from gateway.simulator.jobs import JobRecord, JobStore
from gateway.simulator.window import ActionMeter

QUERY_ACTION = "QueryIProductionJob"
SUBMIT_ACTION = "SubmitIProductionJob"
API_VERSION = "2014-06-18"
ACTIONS = (QUERY_ACTION, SUBMIT_ACTION)


class Simulator:
    """The state of one simulated MPS endpoint.

    - `store`: every job (demo set, submitted, planted);
    - `cycles`: the demo jobs that move, a new job per run (`cycles.DemoCycles`), from the clock
      at construction on;
    - `meters`: per action, calls / throttled / peak in a rolling second, and the admission log
      that enforces `qps` (changeable at run time);
    - `faults` and `rng`: the fault knobs and the seeded generator their decisions draw from;
    - `auth`: the access keys and the nonces seen;
    - `clock`: wall-clock seconds (timestamps are checked against it; jobs age by it);
    - `sleep`: waits out the latency fault.
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.qps = settings.qps
        self.store = JobStore(build_demo_jobs(settings.seed), max_added=settings.max_jobs)
        self.cycles = DemoCycles(
            settings.seed, phase_seconds=settings.demo_phase_seconds, origin=clock()
        )
        self.meters = {action: ActionMeter() for action in ACTIONS}
        #: Authenticated calls per signature version ("v1", "v3"): shows which scheme clients use.
        self.signatures: dict[str, int] = {"v1": 0, "v3": 0}
        self.faults = Faults(
            latency_ms=settings.latency_ms,
            latency_jitter_ms=settings.latency_jitter_ms,
            error_rate=settings.error_rate,
            malformed_rate=settings.malformed_rate,
            drop_rate=settings.drop_rate,
        )
        self.rng = random.Random(settings.seed)
        self.auth = Authenticator(
            {settings.access_key_id: settings.access_key_secret.get_secret_value()}
        )
        # The pipeline a job runs on when its submit names none (one per simulated account).
        self.default_pipeline_id = f"{random.Random(settings.seed + 1).getrandbits(128):032x}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(jobs={len(self.store)}, qps={self.qps})"

    def find(self, job_id: str, now: float) -> JobRecord | None:
        """The job `job_id` names at `now`: a stored one (a planted job wins an id), or a run
        of a moving demo job that has started."""
        stored = self.store.get(job_id)
        return stored if stored is not None else self.cycles.get(job_id, now)

    def listing(self, now: float) -> list[dict[str, JsonValue]]:
        """`GET /_simulator/jobs`: the stored jobs, then the latest run of each moving one."""
        return self.store.listing(now) + self.cycles.listing(now)

    def stats(self) -> dict[str, JsonValue]:
        actions: dict[str, JsonValue] = {
            action: dict(meter.as_json()) for action, meter in self.meters.items()
        }
        signatures: dict[str, JsonValue] = dict(self.signatures)
        timelines: dict[str, JsonValue] = {
            action: meter.timeline.as_json() for action, meter in self.meters.items()
        }
        return {
            "qps": self.qps,
            "actions": actions,
            "signatures": signatures,
            "arrivalsPerSecond": timelines,
        }

    def reset_stats(self) -> None:
        for meter in self.meters.values():
            meter.reset()
        self.signatures = dict.fromkeys(self.signatures, 0)

    def faults_json(self) -> dict[str, JsonValue]:
        faults = self.faults
        return {
            "latencyMs": faults.latency_ms,
            "latencyJitterMs": faults.latency_jitter_ms,
            "errorRate": faults.error_rate,
            "malformedRate": faults.malformed_rate,
            "dropRate": faults.drop_rate,
            "qps": self.qps,
        }
