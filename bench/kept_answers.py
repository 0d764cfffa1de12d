"""Kept answers: requests/s of repeated finished-job queries (POST and GET) against a bare
Strawberry app, the access log's share of a kept answer's cost, and a 90/10 mix of finished and
running jobs checked for staleness, in one run.

    .venv/bin/python -m bench.kept_answers [--connections 32] [--rounds 3] [--seconds 5]
                                           [--mix-seconds 10]

Servers, all child processes under `uvicorn.run` as `python -m gateway serve` calls it (uvloop,
httptools): the gateway as the README starts it (embedded simulator, access log at INFO), the
same gateway with `GATEWAY_ACCESS_LOG=false`, and `bench.bare_app` (Strawberry with its parser
and validation caches, answering the same shape from a constant). Rounds alternate the servers'
order. Every response is checked byte for byte (HTTP 200). Then the mix: `--connections`
clients on the gateway, 9 requests in 10 for finished demo jobs (checked byte for byte) and 1
for one of 10 running jobs planted in the embedded simulator, half of which finish mid-run. A
running job's answer is stale when its snapshot is older than the running ttl allows, or says
ANALYSING although its job finished longer ago than that: any stale answer voids the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

if not __package__:  # run as `python bench/kept_answers.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cached_job import (
    QUERY_TEMPLATE,
    Measurement,
    check_client,
    describe,
    measure,
    shape_difference,
)
from bench.loadgen import (
    Exchange,
    add_closed_loop_options,
    get_request,
    post_request,
    run,
)
from bench.processes import (
    HOST,
    Server,
    ServerGroup,
    run_main,
    scrub_environment_and_say,
)
from bench.readouts import readiness
from gateway.settings import GatewaySettings, SimulatorSettings
from gateway.simulator.demo import demo_job_ids

GOAL = 3.0
#: The running ttl of the gateway as started (GATEWAY_CACHE_RUNNING_TTL's default) plus a
#: second of slack for this machine: an ANALYSING answer older than this is stale.
FRESH_WITHIN = GatewaySettings().cache_running_ttl + 1.0
RUNNING_JOBS = 10
MIX_QUERY = "query Mix($id: ID!) { job(id: $id) { id state result { code } fetchedAt } }"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_closed_loop_options(parser, each="server")
    parser.add_argument("--mix-seconds", type=float, default=10.0)
    parser.add_argument("--skip-client-check", action="store_true")
    args = parser.parse_args(argv)
    return run_main("kept_answers", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    job_id = demo_job_ids(SimulatorSettings())[0]
    query = QUERY_TEMPLATE % job_id
    log_level = GatewaySettings().log_level.lower()
    serve = ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"]
    with ServerGroup() as group:
        gateway = group.start("gateway", serve, ready_path="/readyz")
        quiet = group.start(
            "no-log", serve, env={"GATEWAY_ACCESS_LOG": "false"}, ready_path="/readyz"
        )
        bare = group.start(
            "bare",
            ["-m", "bench.bare_app", "--host", HOST, "--port", "{port}", "--log-level", log_level],
            ready_path="/graphql",
            ready_headers={"accept": "text/html"},
        )
        requests = {
            (server.name, method): request_of(server, method, query)
            for server in (gateway, quiet, bare)
            for method in ("POST", "GET")
        }
        expected = {
            key: settled_body(group, server, requests[key])
            for server in (gateway, quiet, bare)
            for key in [(server.name, "POST"), (server.name, "GET")]
        }
        for method in ("POST", "GET"):
            problem = shape_difference(expected["gateway", method], expected["bare", method])
            if problem:
                print(f"INVALID: the baseline's {method} answer differs: {problem}")
                print("RESULT kept_answers valid=no reason=shape")
                return 2
        print(
            f"kept_answers: job {job_id}, {args.connections} connections, {args.rounds} rounds "
            f"of {args.seconds:g} s per server and method (+{args.warmup:g} s warm-up each)"
        )
        if not args.skip_client_check:
            check_client(group, expected["gateway", "POST"], args.connections)

        measurements: dict[str, list[Measurement]] = {"POST": [], "GET": []}
        for number in range(1, args.rounds + 1):
            for method in ("POST", "GET"):
                servers = [gateway, bare, quiet] if method == "POST" else [gateway, bare]
                for server in servers if number % 2 else reversed(servers):
                    key = (server.name, method)
                    m = measure(server, number, requests[key], expected[key], args)
                    measurements[method].append(m)
                    print(f"{method:<4} {describe(m)}")
        kept = readiness(gateway)["answers"]
        mix = run_mix(gateway, args)
    return report(measurements, kept, mix)


def request_of(server: Server, method: str, query: str) -> bytes:
    if method == "POST":
        return post_request(HOST, server.port, "/graphql", json.dumps({"query": query}).encode())
    return get_request(HOST, server.port, "/graphql", {"query": query})


def settled_body(group: ServerGroup, server: Server, request: bytes) -> bytes:
    """The body `server` answers `request` with once warm (asked three times: the gateway keeps
    an answer on its second sighting), checked to be a finished job's and to be stable."""

    async def ask() -> list[bytes]:
        exchange = await Exchange.open(HOST, server.port)
        try:
            bodies = []
            for _ in range(3):
                status, body = await exchange.send(request)
                if status != 200:
                    raise group.fail(server, f"{server.name} answered HTTP {status}.")
                bodies.append(body)
            return bodies
        finally:
            exchange.close()

    bodies = run(ask)
    job = json.loads(bodies[-1])["data"]["job"]
    if job["state"] != "SUCCESS" or bodies[1] != bodies[2]:
        raise group.fail(server, f"{server.name} did not answer as expected: {bodies[-1]!r}")
    return bodies[-1]


@dataclass(slots=True)
class MixResult:
    requests: int = 0
    seconds: float = 0.0
    finished: int = 0
    running: int = 0
    wrong: int = 0
    stale: int = 0
    moved_seen_finished: int = 0
    latencies: list[float] | None = None
    examples: list[str] | None = None


def run_mix(gateway: Server, args: argparse.Namespace) -> MixResult:
    """Finished demo jobs and planted running ones, 9 to 1; half the running ones finish
    halfway through. Every answer is checked; see the module docstring."""
    with httpx.Client(base_url=gateway.url, timeout=10.0, trust_env=False) as client:
        finished = []
        for job_id in demo_job_ids(SimulatorSettings()):
            body = mix_body(job_id)
            answer = client.post("/graphql", content=body, headers=JSON).json()
            job = (answer.get("data") or {}).get("job")
            if job and job["state"] in ("SUCCESS", "FAIL") and "errors" not in answer:
                finished.append(job_id)
        finished = finished[:9]
        running = [f"be9c0000000000000000000000{n:06d}" for n in range(RUNNING_JOBS)]
        for job_id in running:
            client.put(
                f"/_simulator/jobs/{job_id}", json=planted(job_id, "Analysing")
            ).raise_for_status()
        expected: dict[str, bytes] = {}
        for job_id in finished:
            for _ in range(3):  # kept on the second sighting; the third is a kept answer
                expected[job_id] = client.post(
                    "/graphql", content=mix_body(job_id), headers=JSON
                ).content

    plan = [
        (job_id, post_request(HOST, gateway.port, "/graphql", mix_body(job_id)))
        for job_id in finished
    ]
    result = MixResult(latencies=[], examples=[])
    moved_at: dict[str, float] = {}

    async def client_loop(offset: int, stop: float) -> None:
        exchange = await Exchange.open(HOST, gateway.port)
        turn = offset
        try:
            while time.perf_counter() < stop:
                turn += 1
                if turn % 10 == 0:
                    job_id = running[(turn // 10) % len(running)]
                    request = post_request(HOST, gateway.port, "/graphql", mix_body(job_id))
                else:
                    job_id, request = plan[turn % len(plan)]
                sent_wall, sent = time.time(), time.perf_counter()
                status, body = await exchange.send(request)
                assert result.latencies is not None
                result.latencies.append(time.perf_counter() - sent)
                result.requests += 1
                check(job_id, sent_wall, status, body)
        finally:
            exchange.close()

    def check(job_id: str, sent_wall: float, status: int, body: bytes) -> None:
        assert result.examples is not None
        if job_id in expected:
            result.finished += 1
            if status != 200 or body != expected[job_id]:
                result.wrong += 1
                result.examples.append(f"finished {job_id}: {status} {body[:200]!r}")
            return
        result.running += 1
        try:
            job = json.loads(body)["data"]["job"]
            state = job["state"]
            fetched = datetime.fromisoformat(job["fetchedAt"]).timestamp()
        except (ValueError, KeyError, TypeError):
            result.wrong += 1
            result.examples.append(f"running {job_id}: {status} {body[:200]!r}")
            return
        if state == "SUCCESS" and job_id in moved_at:
            result.moved_seen_finished += 1
            return
        moved = moved_at.get(job_id)
        too_old = state == "ANALYSING" and fetched < sent_wall - FRESH_WITHIN
        finished_since = moved is not None and sent_wall > moved + FRESH_WITHIN
        if state != "ANALYSING" or too_old or finished_since:
            result.stale += 1
            result.examples.append(
                f"running {job_id} sent {sent_wall:.3f}: {state} fetched {fetched:.3f}"
                f" (finished at {moved})"
            )

    async def move_halfway(start: float) -> None:
        await asyncio.sleep(args.mix_seconds / 2)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0, trust_env=False) as c:
            for job_id in running[: RUNNING_JOBS // 2]:
                response = await c.put(
                    f"/_simulator/jobs/{job_id}", json=planted(job_id, "Success")
                )
                response.raise_for_status()
                moved_at[job_id] = time.time()

    async def mix() -> None:
        start = time.perf_counter()
        stop = start + args.mix_seconds
        await asyncio.gather(
            move_halfway(start), *(client_loop(n, stop) for n in range(args.connections))
        )
        result.seconds = time.perf_counter() - start

    run(mix)
    return result


JSON = {"content-type": "application/json"}


def mix_body(job_id: str) -> bytes:
    return json.dumps({"query": MIX_QUERY, "variables": {"id": job_id}}).encode()


def planted(job_id: str, state: str) -> dict[str, str]:
    """A job in the simulator's upstream shape (`PUT /_simulator/jobs/{id}`)."""
    fields = {
        "JobId": job_id,
        "FunctionName": "ImageCartoonize",
        "State": state,
        "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/face.jpg",
        "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}.jpg",
    }
    if state == "Success":
        fields["Result"] = json.dumps({"Code": "Success", "Message": "Successful.", "Data": "{}"})
    return fields


def cpu_per_request(runs: list[Measurement], name: str) -> float:
    """The median over rounds of the server's CPU microseconds per answered request."""
    per_request = [
        1e6 * m.server_cores / m.load.rps
        for m in runs
        if m.server == name and m.server_cores is not None and m.load.rps
    ]
    return statistics.median(per_request) if per_request else 0.0


def report(measurements: dict[str, list[Measurement]], kept: object, mix: MixResult) -> int:
    valid = True
    figures: dict[str, float] = {}
    for method, runs in measurements.items():

        def median(name: str, field: str, runs: list[Measurement] = runs) -> float:
            values: list[float] = [getattr(m.load, field) for m in runs if m.server == name]
            return statistics.median(values)

        rps = {name: median(name, "rps") for name in ("gateway", "bare")}
        p99 = {name: median(name, "latency_p99_ms") for name in ("gateway", "bare")}
        ratio = rps["gateway"] / rps["bare"] if rps["bare"] else 0.0
        failures = sum(m.load.failed for m in runs)
        valid = valid and not failures
        figures[f"{method.lower()}_ratio"] = ratio
        figures[f"{method.lower()}_gateway_p99_ms"] = p99["gateway"]
        figures[f"{method.lower()}_bare_p99_ms"] = p99["bare"]
        verdict = "meets" if ratio >= GOAL and p99["gateway"] <= p99["bare"] else "MISSES"
        print(
            f"{method}: gateway {rps['gateway']:,.0f} req/s, bare {rps['bare']:,.0f} req/s, "
            f"ratio {ratio:.2f}; p99 gateway {p99['gateway']:.1f} ms, bare {p99['bare']:.1f} ms:"
            f" {verdict} the goal (ratio >= {GOAL}, p99 no worse); failures {failures}"
        )
        if method == "POST":
            logged, unlogged = rps["gateway"], median("no-log", "rps")
            share = 1 - logged / unlogged if unlogged else 0.0
            cpu = {name: cpu_per_request(runs, name) for name in ("gateway", "no-log")}
            cpu_share = 1 - cpu["no-log"] / cpu["gateway"] if cpu["gateway"] else 0.0
            figures["access_log_share"] = share
            figures["access_log_cpu_share"] = cpu_share
            print(
                f"access log: {unlogged:,.0f} req/s without it, {logged:,.0f} with it at INFO: "
                f"its lines cost {100 * share:.1f}% of a kept answer's time; server CPU per "
                f"request {cpu['no-log']:.0f} us without it, {cpu['gateway']:.0f} us with it: "
                f"{100 * cpu_share:.1f}% (a shared machine makes both noisy; CPU the less)"
            )
    print(f"gateway's kept answers after the rounds: {kept}")
    latencies = sorted(mix.latencies or [0.0])
    mix_rps = mix.requests / mix.seconds if mix.seconds else 0.0
    print(
        f"mix (90% finished, 10% running, half of these finishing mid-run): {mix_rps:,.0f} "
        f"req/s, p50 {1000 * statistics.median(latencies):.1f} ms, p99 "
        f"{1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms; {mix.finished} finished "
        f"answers ({mix.wrong} wrong), {mix.running} running ones ({mix.stale} stale, "
        f"{mix.moved_seen_finished} seen finished after their move)"
    )
    for example in (mix.examples or [])[:5]:
        print(f"  {example}")
    valid = valid and mix.wrong == 0 and mix.stale == 0 and mix.moved_seen_finished > 0
    if not valid:
        print("INVALID RUN: failures, wrong or stale answers, or no moved job seen finished")
    print(
        f"RESULT kept_answers post_ratio={figures['post_ratio']:.2f} "
        f"get_ratio={figures['get_ratio']:.2f} "
        f"post_p99_ms={figures['post_gateway_p99_ms']:.1f} "
        f"bare_post_p99_ms={figures['post_bare_p99_ms']:.1f} "
        f"get_p99_ms={figures['get_gateway_p99_ms']:.1f} "
        f"bare_get_p99_ms={figures['get_bare_p99_ms']:.1f} "
        f"access_log_share={figures['access_log_share']:.3f} "
        f"access_log_cpu_share={figures['access_log_cpu_share']:.3f} mix_rps={mix_rps:.0f} "
        f"mix_stale={mix.stale} mix_wrong={mix.wrong} valid={'yes' if valid else 'no'}"
    )
    return 0 if valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
