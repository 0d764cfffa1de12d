"""The demo jobs that move, on a clock moved by hand: each run Queuing, Analysing, then finished
for good, a new job per run, slots a phase apart, and all of it in `GET /_simulator/jobs`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.settings import SimulatorSettings
from gateway.simulator import moving_demo_job_id
from gateway.simulator.cycles import SLOTS, DemoCycles
from tests.simulator.conftest import EPOCH, ManualClock, query_params

PHASE = 20.0  # the default
SEED = SimulatorSettings().seed
OUT = "oss://media-results-sh.oss-cn-shanghai.aliyuncs.com"
IN = "oss://media-uploads-sh.oss-cn-shanghai.aliyuncs.com"


def ids(slot: int, *runs: int) -> list[str]:
    cycles = DemoCycles(SEED, phase_seconds=PHASE, origin=EPOCH)
    return [cycles.run_id(slot, run) for run in runs]


async def query(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get("/", params=query_params(job_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body.pop("RequestId")
    return body


async def listing(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = (await client.get("/_simulator/jobs")).json()["jobs"]
    return [entry for entry in jobs if entry["source"] == "cycling"]


def cover_run(run: int, state: str, started: float) -> dict[str, Any]:
    """What QueryIProductionJob answers for run `run` of the first slot (Cover)."""
    job_id, next_id = ids(0, run, run + 1)
    answer: dict[str, Any] = {
        "JobId": job_id,
        "FunctionName": "Cover",
        "State": state,
        "Input": f"{IN}/campaign/summer/product-launch.mp4",
        "Output": f"{OUT}/cover/{{source}}-{{timestamp}}-{{sequenceId}}.jpg",
        "PipelineId": DemoCycles(SEED, phase_seconds=PHASE, origin=0).pipeline_id,
        "JobParams": "{}",
        "UserData": json.dumps(
            {"demo": "cycling", "run": run, "nextJobId": next_id}, separators=(",", ":")
        ),
    }
    if state == "Analysing":
        answer["Result"] = ""
    elif state == "Success":
        stamp = int(started * 1000)
        data = {"result": [{"file": f"cover/product-launch-{stamp}-{n}.jpg"} for n in range(3)]}
        answer["Result"] = json.dumps(
            {
                "Code": "Success",
                "Data": json.dumps(data, separators=(",", ":")),
                "Message": "Successful.",
            },
            separators=(",", ":"),
        )
    return answer


async def test_each_run_goes_through_queuing_and_analysing_to_success_for_good(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    run0, run1 = ids(0, 0, 1)
    assert run0 == moving_demo_job_id(SEED)

    seen = [await query(client, run0)]
    clock.advance(PHASE - 0.001)
    seen.append(await query(client, run0))
    clock.advance(0.001)
    seen.append(await query(client, run0))
    clock.advance(PHASE)
    seen.append(await query(client, run0))
    before_run1 = await query(client, run1)
    clock.advance(PHASE)  # the slot's period: run 1 starts, a job of its own
    seen.append(await query(client, run0))
    first_of_run1 = await query(client, run1)
    clock.advance(86_400)
    seen.append(await query(client, run0))

    assert seen == [
        cover_run(0, "Queuing", EPOCH),
        cover_run(0, "Queuing", EPOCH),
        cover_run(0, "Analysing", EPOCH),
        cover_run(0, "Success", EPOCH),
        cover_run(0, "Success", EPOCH),
        cover_run(0, "Success", EPOCH),  # a day later: finished for good
    ]
    assert before_run1 == {"JobId": run1}  # not started: no such job yet
    assert first_of_run1 == cover_run(1, "Queuing", EPOCH + 3 * PHASE)


async def test_the_slots_are_a_phase_apart_and_the_last_one_fails(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    at_start = await listing(client)
    clock.advance(PHASE / 2)
    halfway = await listing(client)
    clock.advance(PHASE / 2)
    a_phase_later = await listing(client)

    def entry(
        slot: int, run: int, state: str, ends: float | None, next_in: float
    ) -> dict[str, Any]:
        job_id, next_id = ids(slot, run, run + 1)
        return {
            "id": job_id,
            "functionName": SLOTS[slot].function_name,
            "state": state,
            "quirk": None,
            "source": "cycling",
            "cycle": {
                "run": run,
                "stateEndsInSeconds": ends,
                "nextJobId": next_id,
                "nextRunInSeconds": next_in,
            },
        }

    assert at_start == [
        entry(0, 0, "Queuing", 20.0, 60.0),
        entry(1, 0, "Analysing", 20.0, 40.0),
        entry(2, 0, "Fail", None, 20.0),
    ]
    assert halfway == [
        entry(0, 0, "Queuing", 10.0, 50.0),
        entry(1, 0, "Analysing", 10.0, 30.0),
        entry(2, 0, "Fail", None, 10.0),
    ]
    assert a_phase_later == [
        entry(0, 0, "Analysing", 20.0, 40.0),
        entry(1, 0, "Success", None, 20.0),
        entry(2, 1, "Queuing", 20.0, 60.0),
    ]
    failed = await query(client, ids(2, 0)[0])
    assert failed["State"] == "Fail"
    assert json.loads(failed["Result"]) == {
        "Code": "InvalidParameter.ResourceContentBad",
        "Message": f'The resource content of "{IN}/ugc/incoming/podcast-ep12-failed-upload.mp3" '
        "is bad: it could not be decoded.",
    }


async def test_a_run_is_shown_in_detail_like_any_job(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    run0 = moving_demo_job_id(SEED)
    clock.advance(PHASE)

    detail = (await client.get(f"/_simulator/jobs/{run0}")).json()

    assert detail == {
        "job": (await listing(client))[0],
        "fields": cover_run(0, "Analysing", EPOCH),
    }


@pytest.mark.parametrize(
    "spelling",
    [
        lambda job_id: job_id.upper(),
        lambda job_id: job_id[:-8] + "0x000000",
        lambda job_id: job_id[:-8] + "+0000000",
        lambda job_id: job_id[:-8] + "0000_000",
        lambda job_id: job_id[:-1],
        lambda job_id: job_id + "0",
        lambda job_id: "0" * 24 + job_id[-8:],
    ],
)
async def test_only_a_runs_own_id_names_it(
    client: httpx.AsyncClient, spelling: Callable[[str], str]
) -> None:
    other = spelling(moving_demo_job_id(SEED))
    assert await query(client, other) == {"JobId": other}


def test_the_ids_come_from_the_seed_alone() -> None:
    made_now = DemoCycles(SEED, phase_seconds=PHASE, origin=EPOCH)
    made_later = DemoCycles(SEED, phase_seconds=1.0, origin=EPOCH + 12_345)
    other_seed = DemoCycles(SEED + 1, phase_seconds=PHASE, origin=EPOCH)

    assert made_now.run_id(0, 0) == made_later.run_id(0, 0) == moving_demo_job_id(SEED)
    assert made_now.run_id(0, 0).endswith("00000000")
    assert made_now.run_id(2, 17) == made_now.run_id(2, 0)[:-8] + "00000011"
    assert other_seed.run_id(0, 0) != made_now.run_id(0, 0)
    runs = {made_now.run_id(slot, run) for slot in range(3) for run in range(3)}
    assert len(runs) == 9


async def test_a_short_phase_moves_fast(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(demo_phase_seconds=0.5)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://simulator"
    ) as admin:
        states = []
        for _ in range(4):
            states.append([(e["id"][-2:], e["state"]) for e in await listing(admin)])
            clock.advance(0.5)

    assert states == [
        [("00", "Queuing"), ("00", "Analysing"), ("00", "Fail")],
        [("00", "Analysing"), ("00", "Success"), ("01", "Queuing")],
        [("00", "Success"), ("01", "Queuing"), ("01", "Analysing")],
        [("01", "Queuing"), ("01", "Analysing"), ("01", "Fail")],
    ]


async def test_a_planted_job_wins_a_runs_id_and_runs_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    run0, run1 = ids(0, 0, 1)
    planted = await client.put(f"/_simulator/jobs/{run1}", json={"JobId": run1, "State": "Fail"})
    refused = await client.delete(f"/_simulator/jobs/{run0}")

    assert planted.status_code == 200
    assert await query(client, run1) == {"JobId": run1, "State": "Fail"}
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "Expected the id of a stored job, received that of a moving demo job's run, "
        "which cannot be deleted."
    }
