"""The simulator's own control endpoints, under `/_simulator/` (JSON in, JSON out, no auth).

    GET    /_simulator/health          {"status": "ok"}
    GET    /_simulator/stats           {"qps": 100, "actions": {"QueryIProductionJob":
                                         {"calls": 0, "throttled": 0, "peakWindow": 0}, ...},
                                         "signatures": {"v1": 0, "v3": 0},
                                         "arrivalsPerSecond": {"QueryIProductionJob":
                                         {"fromSecond": 0, "counts": [100, 94, ...]}, ...}}
                                         (counts: calls arriving in each whole second since
                                         the action's first call after a reset; the last hour)
    POST   /_simulator/stats/reset     zeroes the counters; answers the stats
    GET    /_simulator/faults          {"latencyMs", "latencyJitterMs", "errorRate",
                                         "malformedRate", "dropRate", "qps"}
    PUT    /_simulator/faults          the same object; keys left out keep their value
    GET    /_simulator/jobs            {"jobs": [{"id", "functionName", "state", "quirk",
                                                   "source"}, ...]}: the demo set, submitted
                                         and planted jobs, then the latest run of each moving
                                         demo job ("source": "cycling", and "cycle": {"run",
                                         "stateEndsInSeconds", "nextJobId", "nextRunInSeconds"})
    GET    /_simulator/jobs/{id}       {"job": <listing entry>, "fields": <what a query answers>}
    PUT    /_simulator/jobs/{id}       a JSON object of fields, answered verbatim by queries
    DELETE /_simulator/jobs/{id}       forgets the job (204; 404 if unknown; 400 for a run of a
                                         moving demo job, which always answers)

Bad input gets HTTP 400 `{"error": "<what was expected and what arrived>"}`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.model import JsonValue
from gateway.simulator.jobs import StaticJob
from gateway.simulator.state import Simulator


class FaultsUpdate(BaseModel):
    """Body of `PUT /_simulator/faults`."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | None = Field(default=None, ge=0, alias="latencyMs")
    latency_jitter_ms: float | None = Field(default=None, ge=0, alias="latencyJitterMs")
    error_rate: float | None = Field(default=None, ge=0, le=1, alias="errorRate")
    malformed_rate: float | None = Field(default=None, ge=0, le=1, alias="malformedRate")
    drop_rate: float | None = Field(default=None, ge=0, le=1, alias="dropRate")
    qps: int | None = Field(default=None, ge=1)


def _simulator(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        value = json.loads(await request.body())
    except ValueError as exc:
        return _bad_request(f"Expected a JSON object as the body, received invalid JSON: {exc}.")
    if not isinstance(value, dict):
        return _bad_request(f"Expected a JSON object as the body, received {type(value).__name__}.")
    return value


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def get_stats(request: Request) -> Response:
    return JSONResponse(_simulator(request).stats())


async def reset_stats(request: Request) -> Response:
    simulator = _simulator(request)
    simulator.reset_stats()
    return JSONResponse(simulator.stats())


async def get_faults(request: Request) -> Response:
    return JSONResponse(_simulator(request).faults_json())


async def put_faults(request: Request) -> Response:
    body = await _json_object(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        update = FaultsUpdate.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return _bad_request(f"Invalid faults: {problems}.")
    simulator = _simulator(request)
    for name, value in update.model_dump(exclude_none=True).items():
        if name == "qps":
            simulator.qps = value
        else:
            setattr(simulator.faults, name, value)
    return JSONResponse(simulator.faults_json())


async def list_jobs(request: Request) -> Response:
    simulator = _simulator(request)
    return JSONResponse({"jobs": simulator.listing(simulator.clock())})


async def get_job(request: Request) -> Response:
    simulator = _simulator(request)
    now = simulator.clock()
    job = simulator.find(request.path_params["job_id"], now)
    if job is None:
        return JSONResponse({"error": "No job has this id."}, status_code=404)
    return JSONResponse({"job": job.summary(now), "fields": job.fields(now)})


async def put_job(request: Request) -> Response:
    body = await _json_object(request)
    if isinstance(body, JSONResponse):
        return body
    simulator = _simulator(request)
    job_id: str = request.path_params["job_id"]
    answer: dict[str, JsonValue] = body
    job = StaticJob(job_id, answer, source="custom", quirk="custom: answered verbatim")
    simulator.store.put(job)
    return JSONResponse(job.summary(simulator.clock()))


async def delete_job(request: Request) -> Response:
    simulator = _simulator(request)
    job_id: str = request.path_params["job_id"]
    if simulator.store.delete(job_id):
        return Response(status_code=204)
    if simulator.cycles.get(job_id, simulator.clock()) is not None:
        return _bad_request(
            "Expected the id of a stored job, received that of a moving demo job's run, "
            "which cannot be deleted."
        )
    return JSONResponse({"error": "No job has this id."}, status_code=404)


def admin_routes() -> list[Route]:
    return [
        Route("/_simulator/health", health, methods=["GET"]),
        Route("/_simulator/stats", get_stats, methods=["GET"]),
        Route("/_simulator/stats/reset", reset_stats, methods=["POST"]),
        Route("/_simulator/faults", get_faults, methods=["GET"]),
        Route("/_simulator/faults", put_faults, methods=["PUT"]),
        Route("/_simulator/jobs", list_jobs, methods=["GET"]),
        Route("/_simulator/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/_simulator/jobs/{job_id}", put_job, methods=["PUT"]),
        Route("/_simulator/jobs/{job_id}", delete_job, methods=["DELETE"]),
    ]
