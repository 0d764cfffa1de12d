"""Loop latency: a `{ __typename }` while heavy requests run, against the same on an idle gateway.

    .venv/bin/python -m bench.loop_latency [--seconds 10] [--files 20000] [--probe-interval 0.02]
                                           [--bomb-levels 40]

A standalone simulator and one gateway pointed at it (GATEWAY_MPS_ENDPOINT, the simulator's demo
key pair, pages as long as `--files` and the cost limit that allows them, every other setting at
its default) run as child processes. A job whose result lists
`--files` files is planted in the simulator (`PUT /_simulator/jobs/{id}`), fetched once and its
files listed once, so that the runs below find its snapshot and its views ready.

- idle: a prober sends `{ __typename }` on one keep-alive connection, one at a time, one every
  `--probe-interval` seconds, for `--seconds`; nothing else runs.
- loaded: the same prober, while one heavy client sends, one after the other on its own
  connection, the three requests that used to hold the event loop: a fragment bomb (40 fragments
  each spreading the previous one twice; refused, QUERY_TOO_COMPLEX), 500 `job` fields with
  distinct arguments (12 KB; refused, GRAPHQL_VALIDATION_FAILED), and the `--files` files with
  a `signedUrl` each (answered in full). Each request's text is new (a number in an operation
  name or an id), so that the gateway's parse and validation caches never answer it.

Printed: each phase's probe latency p50/p99/max, the heavy requests by kind (count, mean time,
outcome), and `RESULT loop_latency ratio_p99=<loaded p99 / idle p99> idle_p99_ms=...
loaded_p99_ms=... valid=yes`. The goal is a loaded p99 of at most 100 ms. A wrong answer (a probe
not `{"data":{"__typename":"Query"}}`, a heavy request answered otherwise than described) makes
the run invalid (exit 1); missing the goal is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as `python bench/loop_latency.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import Exchange, post_request, run
from bench.processes import HOST, Server, ServerGroup, run_main, scrub_environment_and_say
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET
from gateway.simulator.jobs import success_result

NAME = "loop_latency"
GOAL_MS = 100.0
JOB_ID = "100b1a7e0c0000000000000000000001"
PROBE = b'{"query": "{ __typename }"}'
PROBE_ANSWER = b'{"data":{"__typename":"Query"}}'


def fragment_bomb(round: int, levels: int = 40) -> str:
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{n} on Query {{ ...F{n - 1} ...F{n - 1} }}" for n in range(1, levels)
    ]
    return f"query Bomb{round} {{ ...F{levels - 1} }} " + " ".join(fragments)


def distinct_fields(round: int, count: int = 500) -> str:
    return "{ " + " ".join(f'job(id: "r{round}-{n}") {{ id }}' for n in range(count)) + " }"


def signed_urls(round: int) -> str:
    files = "result { files { key signedUrl } }"
    return f'query Signed{round} {{ job(id: "{JOB_ID}") {{ {files} }} }}'


def refused_with(code: str) -> Callable[[dict[str, Any]], str | None]:
    def check(body: dict[str, Any]) -> str | None:
        codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
        return None if body.get("data") is None and codes and codes[0] == code else str(codes)

    return check


def all_files_signed(files: int) -> Callable[[dict[str, Any]], str | None]:
    def check(body: dict[str, Any]) -> str | None:
        if "errors" in body:
            return str(body["errors"][:1])
        listed = body["data"]["job"]["result"]["files"]
        signed = sum(1 for file in listed if file["signedUrl"])
        return None if len(listed) == signed == files else f"{signed} of {len(listed)} signed"

    return check


@dataclass(frozen=True, slots=True)
class Heavy:
    kind: str
    #: The document of the n-th request: a new text each time, so that no cache answers it.
    query: Callable[[int], str]
    check: Callable[[dict[str, Any]], str | None]


@dataclass(slots=True)
class HeavyTally:
    seconds: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--files", type=int, default=20_000, help="files of the planted job")
    parser.add_argument(
        "--probe-interval", type=float, default=0.02, help="seconds between two probes"
    )
    parser.add_argument(
        "--bomb-levels",
        type=int,
        default=40,
        help="fragments of the bomb (a gateway without linear limits never ends 40: use ~18)",
    )
    args = parser.parse_args(argv)
    return run_main(NAME, lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    heavies = [
        Heavy(
            f"fragment bomb ({args.bomb_levels} levels)",
            lambda round: fragment_bomb(round, args.bomb_levels),
            refused_with("QUERY_TOO_COMPLEX"),
        ),
        Heavy(
            "500 job fields with distinct arguments",
            distinct_fields,
            refused_with("GRAPHQL_VALIDATION_FAILED"),
        ),
        Heavy(f"{args.files} signed URLs", signed_urls, all_files_signed(args.files)),
    ]
    with ServerGroup() as group:
        simulator = group.start(
            "simulator",
            ["-m", "gateway", "simulator", "--host", HOST, "--port", "{port}"],
            ready_path="/_simulator/health",
        )
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env={
                "GATEWAY_MPS_ENDPOINT": simulator.url,
                # The simulator's published demo key pair (public on purpose, not a secret).
                "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
                # One page of every file (100 by default): the long list this benchmark is
                # about, which only an operator who allows pages that long can meet; each
                # signed file costs 12.
                "GATEWAY_MAX_PAGE_SIZE": str(args.files),
                "GATEWAY_MAX_COST": str(max(100_000, 20 * args.files)),
                "GATEWAY_LOG_LEVEL": "WARNING",
            },
            ready_path="/readyz",
        )
        prepare(simulator, gateway, args.files)
        print(f"phase 1, idle: one probe every {args.probe_interval:g} s for {args.seconds:g} s")
        idle, _ = run(lambda: measure(gateway, args, []))
        print(f"  {describe(idle)}")
        print("phase 2, loaded: the same probes, while one client sends the heavy requests")
        loaded, tallies = run(lambda: measure(gateway, args, heavies))
        print(f"  {describe(loaded)}")
    return report(idle, loaded, heavies, tallies)


def prepare(simulator: Server, gateway: Server, files: int) -> None:
    """Plant the job, let the gateway fetch it and build its files' views once."""
    answer = {
        "JobId": JOB_ID,
        "FunctionName": "Cover",
        "State": "Success",
        "Input": "oss://bench-in.oss-cn-shanghai.aliyuncs.com/in/talk.mp4",
        "Output": "oss://bench-out.oss-cn-shanghai.aliyuncs.com/out/{source}-{sequenceId}.jpg",
        "Result": success_result([f"out/talk-{n}.jpg" for n in range(files)]),
    }
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        client.put(f"{simulator.url}/_simulator/jobs/{JOB_ID}", json=answer).raise_for_status()
        warm = f'{{ job(id: "{JOB_ID}") {{ result {{ files {{ key }} }} }} }}'
        body = client.post(f"{gateway.url}/graphql", json={"query": warm}).json()
        if "errors" in body or len(body["data"]["job"]["result"]["files"]) != files:
            raise RuntimeError(f"the planted job was not served whole: {str(body)[:300]}")


async def measure(
    gateway: Server, args: argparse.Namespace, heavies: list[Heavy]
) -> tuple[list[float], dict[str, HeavyTally]]:
    """Probe latencies (seconds) over `args.seconds`, while `heavies` are sent in a loop."""
    tallies = {heavy.kind: HeavyTally() for heavy in heavies}
    stop = asyncio.Event()
    heavy_client = asyncio.create_task(send_heavies(gateway, heavies, tallies, stop))
    prober = await Exchange.open(HOST, gateway.port)
    request = post_request(HOST, gateway.port, "/graphql", PROBE)
    latencies: list[float] = []
    try:
        ends = time.perf_counter() + args.seconds
        next_probe = time.perf_counter()
        while next_probe < ends:
            await asyncio.sleep(max(0.0, next_probe - time.perf_counter()))
            started = time.perf_counter()
            status, body = await prober.send(request)
            latencies.append(time.perf_counter() - started)
            if status != 200 or body != PROBE_ANSWER:
                raise RuntimeError(f"a probe was answered {status} {body[:200]!r}")
            next_probe = max(next_probe + args.probe_interval, time.perf_counter())
    finally:
        prober.close()
        stop.set()
        await heavy_client
    return latencies, tallies


async def send_heavies(
    gateway: Server, heavies: list[Heavy], tallies: dict[str, HeavyTally], stop: asyncio.Event
) -> None:
    if not heavies:
        return
    exchange = await Exchange.open(HOST, gateway.port)
    try:
        round = 0
        while not stop.is_set():
            round += 1
            for heavy in heavies:
                payload = json.dumps({"query": heavy.query(round)}).encode()
                started = time.perf_counter()
                status, body = await exchange.send(
                    post_request(HOST, gateway.port, "/graphql", payload)
                )
                tally = tallies[heavy.kind]
                tally.seconds.append(time.perf_counter() - started)
                problem = f"HTTP {status}" if status != 200 else heavy.check(json.loads(body))
                if problem is not None:
                    tally.wrong.append(problem)
                if stop.is_set():
                    break
    finally:
        exchange.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def describe(latencies: list[float]) -> str:
    return (
        f"{len(latencies)} probes: p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.1f} ms, max {1000 * max(latencies):.1f} ms"
    )


def report(
    idle: list[float],
    loaded: list[float],
    heavies: list[Heavy],
    tallies: dict[str, HeavyTally],
) -> int:
    problems = []
    print("heavy requests:")
    for heavy in heavies:
        tally = tallies[heavy.kind]
        mean = statistics.mean(tally.seconds) if tally.seconds else 0.0
        print(
            f"  {heavy.kind}: {len(tally.seconds)} sent, mean {1000 * mean:.0f} ms, "
            f"{len(tally.wrong)} answered wrong"
        )
        if not tally.seconds:
            problems.append(f"no {heavy.kind} was answered during the run")
        if tally.wrong:
            problems.append(f"{heavy.kind}: {tally.wrong[0]}")
    idle_p99 = 1000 * percentile(idle, 0.99)
    loaded_p99 = 1000 * percentile(loaded, 0.99)
    ratio = loaded_p99 / idle_p99 if idle_p99 else float("inf")
    verdict = "met" if loaded_p99 <= GOAL_MS else "MISSED"
    print(f"probe p99: idle {idle_p99:.1f} ms, loaded {loaded_p99:.1f} ms, ratio {ratio:.1f}")
    print(f"goal (loaded p99 <= {GOAL_MS:.0f} ms): {verdict}")
    for problem in problems:
        print(f"INVALID: {problem}")
    print(
        f"RESULT {NAME} ratio_p99={ratio:.2f} idle_p99_ms={idle_p99:.1f} "
        f"loaded_p99_ms={loaded_p99:.1f} loaded_max_ms={1000 * max(loaded):.1f} "
        f"valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
