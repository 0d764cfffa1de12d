"""Cached terminal job: requests/s of the gateway against a bare Strawberry app, in one run.

    .venv/bin/python -m bench.cached_job [--connections 32] [--rounds 3] [--seconds 5]

Both servers run as child processes under identical uvicorn settings: the gateway as
`python -m gateway serve` on its embedded simulator, the baseline as `python -m bench.bare_app`.
After one query warms the gateway's cache, a closed-loop generator in this process keeps
`--connections` keep-alive connections busy with the same query of the documented example job,
alternating servers round by round (A B, B A, A B, ...) so that drift on a shared machine hits
both alike. Every response must be HTTP 200 with exactly the expected body; a run with any failure
is invalid and exits 1. Missing the goal (ratio >= 0.85) is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as `python bench/cached_job.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import LoadResult, add_closed_loop_options, closed_loop, post_request, run
from bench.processes import (
    HOST,
    Server,
    ServerGroup,
    cpu_seconds,
    run_main,
    scrub_environment_and_say,
)
from bench.readouts import fetcher_stats, kept_answer_hits
from gateway.settings import GatewaySettings, SimulatorSettings
from gateway.simulator.demo import demo_job_ids

GOAL = 0.85
QUERY_TEMPLATE = (
    '{ job(id: "%s") { id state functionName params userData '
    "result { code succeeded files { name contentType url } } fetchedAt } }"
)


@dataclass(frozen=True, slots=True)
class Measurement:
    server: str
    round: int
    load: LoadResult
    #: Cores the server process used while measured (None without /proc).
    server_cores: float | None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_closed_loop_options(parser, each="server")
    parser.add_argument(
        "--skip-client-check", action="store_true", help="skip the generator's ceiling check"
    )
    args = parser.parse_args(argv)
    return run_main("cached_job", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    job_id = demo_job_ids(SimulatorSettings())[0]
    query = QUERY_TEMPLATE % job_id
    payload = json.dumps({"query": query}).encode()
    # The gateway hands its log level to uvicorn.run; the baseline gets the same one.
    log_level = GatewaySettings().log_level.lower()

    with ServerGroup() as group:
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            ready_path="/readyz",
        )
        bare = group.start(
            "bare",
            ["-m", "bench.bare_app", "--host", HOST, "--port", "{port}", "--log-level", log_level],
            ready_path="/graphql",
            ready_headers={"accept": "text/html"},  # answered with GraphiQL once serving
        )
        expected = {
            server.name: reference_body(group, server, payload, job_id)
            for server in (gateway, bare)
        }
        problem = shape_difference(expected["gateway"], expected["bare"])
        if problem:
            print(f"INVALID: the baseline's answer is not the gateway's shape: {problem}")
            print("RESULT cached_job valid=no reason=shape")
            return 2
        print(
            f"cached_job: job {job_id}, {args.connections} connections, {args.rounds} rounds of "
            f"{args.seconds:g} s per server (+{args.warmup:g} s unmeasured warm-up each), "
            f"uvicorn log level {log_level!r} for both"
        )
        if not args.skip_client_check:
            check_client(group, expected["gateway"], args.connections)

        stats_before = fetcher_stats(gateway)
        kept_before = kept_answer_hits(gateway)
        measurements: list[Measurement] = []
        for number in range(1, args.rounds + 1):
            # A B, B A, A B...: a linear drift over the run weighs on both servers alike.
            order = (gateway, bare) if number % 2 else (bare, gateway)
            for server in order:
                request = post_request(HOST, server.port, "/graphql", payload)
                measurement = measure(server, number, request, expected[server.name], args)
                measurements.append(measurement)
                print(describe(measurement))
        stats_after = fetcher_stats(gateway)
        kept_after = kept_answer_hits(gateway)
        if kept_before is not None and kept_after is not None:
            stats_before["kept_answer_hits"], stats_after["kept_answer_hits"] = (
                kept_before,
                kept_after,
            )

    return report(measurements, stats_before, stats_after)


def reference_body(group: ServerGroup, server: Server, payload: bytes, job_id: str) -> bytes:
    """The body every answer of `server` must equal, after checking it is the right answer.

    The gateway's first answer fetches the job (a cache miss); the second comes from its cache,
    and a terminal snapshot never changes, so every answer after it is byte-for-byte the same.
    """
    bodies = []
    with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as client:
        for _ in range(2):
            response = client.post(
                "/graphql", content=payload, headers={"content-type": "application/json"}
            )
            if response.status_code != 200:
                raise group.fail(server, f"{server.name} answered HTTP {response.status_code}.")
            bodies.append(response.content)
    answer = json.loads(bodies[1])
    job = (answer.get("data") or {}).get("job") or {}
    result = job.get("result") or {}
    if (
        "errors" in answer
        or job.get("id") != job_id
        or job.get("state") != "SUCCESS"
        or result.get("succeeded") is not True
        or not result.get("files")
        or bodies[0] != bodies[1]
    ):
        raise group.fail(server, f"{server.name} did not answer as expected: {bodies[1]!r}")
    return bodies[1]


def shape_difference(gateway_body: bytes, bare_body: bytes) -> str | None:
    """Where the two answers differ, `fetchedAt` aside (its value is the gateway's fetch time),
    or None: the baseline must serialize the same data, so that both do the same work."""
    ours: dict[str, Any] = json.loads(gateway_body)["data"]["job"]
    theirs: dict[str, Any] = json.loads(bare_body)["data"]["job"]
    if len(ours.pop("fetchedAt")) != len(theirs.pop("fetchedAt")):
        return "fetchedAt has a different length"
    if ours != theirs:
        return f"gateway {ours!r} != bare {theirs!r}"
    return None


def check_client(group: ServerGroup, body: bytes, connections: int) -> None:
    """Print the generator's rate against a server that does nothing: its ceiling here."""
    with tempfile.NamedTemporaryFile(prefix="mps-bench-body-") as file:
        file.write(body)
        file.flush()
        trivial = group.start(
            "trivial",
            ["-m", "bench.trivial_server", "--port", "{port}", "--body-file", file.name],
            ready_path="/",
        )
        request = post_request(HOST, trivial.port, "/graphql", b"{}")
        load = run(
            lambda: closed_loop(
                HOST, trivial.port, request, body, connections=connections, warmup=0.5, duration=2
            )
        )
        group.stop(trivial)
    print(
        f"client check: {load.rps:,.0f} req/s against bench.trivial_server "
        f"(the generator spends {1e6 * load.cpu_per_request:.1f} us of CPU per request); "
        f"failures {load.failed}"
    )
    if load.failed:
        raise RuntimeError(f"The load generator failed against the trivial server: {load.failures}")


def measure(
    server: Server, number: int, request: bytes, expected: bytes, args: argparse.Namespace
) -> Measurement:
    """`request` sent on `args.connections` connections for `args.warmup`, then measured for
    `args.seconds`; every answer must be `expected`."""
    pid = server.process.pid
    before = cpu_seconds(pid)
    load = run(
        lambda: closed_loop(
            HOST,
            server.port,
            request,
            expected,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.seconds,
        )
    )
    after = cpu_seconds(pid)
    cores = None
    if before is not None and after is not None:
        # Over warm-up and measured time together: the load is the same throughout.
        cores = (after - before) / (args.warmup + args.seconds)
    return Measurement(server.name, number, load, cores)


def describe(m: Measurement) -> str:
    load = m.load
    cores = f"{m.server_cores:.2f}" if m.server_cores is not None else "n/a"
    return (
        f"round {m.round}  {m.server:<8} {load.rps:8,.0f} req/s  ({load.requests} in "
        f"{load.seconds:.2f} s)  p50 {load.latency_p50_ms:.1f} ms  p99 {load.latency_p99_ms:.1f} ms"
        f"  server CPU {cores} cores  client {1e6 * load.cpu_per_request:.1f} us/req"
        f"  failures {load.failed}"
    )


def report(measurements: list[Measurement], before: dict[str, int], after: dict[str, int]) -> int:
    def median_rps(name: str) -> float:
        return statistics.median(m.load.rps for m in measurements if m.server == name)

    gateway_rps, bare_rps = median_rps("gateway"), median_rps("bare")
    ratio = gateway_rps / bare_rps if bare_rps else 0.0
    rounds = sorted({m.round for m in measurements})
    failures: dict[str, int] = {}
    for m in measurements:
        for reason, count in m.load.failures.items():
            failures[f"{m.server}: {reason}"] = failures.get(f"{m.server}: {reason}", 0) + count
    # None when /readyz does not report the counter: then it cannot void the run either.
    upstream = _delta(before, after, "upstream_calls")
    hits = _delta(before, after, "cache_hits")
    kept = _delta(before, after, "kept_answer_hits")
    print(
        f"median: gateway {gateway_rps:,.0f} req/s, bare {bare_rps:,.0f} req/s; "
        f"ratio per round: {', '.join(f'{_round_ratio(measurements, n):.3f}' for n in rounds)}"
    )
    print(
        f"gateway during the run: {_known(kept)} kept answers, {_known(hits)} snapshot cache "
        f"hits, {_known(upstream)} upstream calls "
        "(expected 0: every answer kept, or from the snapshot cache)"
    )
    valid = not failures and not upstream
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(f"ratio gateway/bare = {ratio:.3f}: {verdict} the goal of >= {GOAL}")
    if not valid:
        print(f"INVALID RUN: failures {failures or 'none'}, upstream calls {upstream}")
    print(
        f"RESULT cached_job ratio={ratio:.3f} gateway_rps={gateway_rps:.0f} "
        f"bare_rps={bare_rps:.0f} failures={sum(failures.values())} "
        f"valid={'yes' if valid else 'no'}"
    )
    return 0 if valid else 1


def _delta(before: dict[str, int], after: dict[str, int], name: str) -> int | None:
    if name not in before or name not in after:
        return None
    return after[name] - before[name]


def _known(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _round_ratio(measurements: list[Measurement], number: int) -> float:
    rps = {m.server: m.load.rps for m in measurements if m.round == number}
    return rps["gateway"] / rps["bare"] if rps.get("bare") else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
