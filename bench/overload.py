"""Ten times the budget, open loop: does every answer still come by the request's deadline?

    .venv/bin/python -m bench.overload [--qps 50] [--factor 10] [--per-query 5] [--seconds 20]
                                       [--deadline 2] [--client-timeout S] [--latency-ms 20]
                                       [--max-concurrent N] [--max-wait S] [--target-wait S]

Child processes: a standalone simulator (SIMULATOR_QPS=qps, SIMULATOR_LATENCY_MS) and one
gateway in front of it (GATEWAY_MPS_ENDPOINT, GATEWAY_UPSTREAM_QPS=qps,
GATEWAY_REQUEST_DEADLINE, GATEWAY_MAX_CONNECTIONS above the generator's connections, the demo
key pair), as `bench.uncached_ids` starts them. This process
sends fresh ids (unknown to the simulator: one upstream call each) at `factor` times the budget,
open loop: `jobs(ids:)` queries of `--per-query` ids leave on a fixed schedule, whatever the
answers do, for `--seconds`. The gateway can serve one id in `factor`; the rest must be refused
(`BUDGET_EXHAUSTED` with a `retryAfter`, `DEADLINE_EXCEEDED`, or `OVERLOADED` with
`--max-concurrent`, `--max-wait` or `--target-wait`), and no answer may come later
than the request's deadline: the goal is p99 <= deadline + 100 ms, answer times measured here
from writing the request to the last byte of its answer. `--client-timeout` sends
`x-request-timeout`, which makes the request's deadline the smaller of the two.

Ratios: p99 / deadline, and ids answered per second / the limit (how much of the account the
gateway still used while shedding nine tenths of the load).

Invalid (exit 1): the simulator's meter saw more than qps calls in a rolling second, or any
throttled call; any answer other than HTTP 200, an error without a code, a code other than
BUDGET_EXHAUSTED, DEADLINE_EXCEEDED and OVERLOADED, a BUDGET_EXHAUSTED or OVERLOADED without
`retryAfter`, a request
without an answer; the generator itself late (p99 of how long after its tick a request left
over `--max-late-ms`: the answer times would then measure this process). Missing the goal is
reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

if not __package__:  # run as `python bench/overload.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answers import Tally, fresh_id, payload
from bench.loadgen import Exchange, post_request, run
from bench.openloop import OpenLoopRun, check_generator, open_loop, percentile
from bench.processes import (
    HOST,
    Server,
    ServerGroup,
    cpu_seconds,
    run_queue_seconds,
    scrub_environment,
)
from bench.readouts import readiness, simulator_action_stats
from bench.uncached import warm_up
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
)

NAME = "overload"
ACTION = "QueryIProductionJob"
#: The goal: p99 of the answer times at most the deadline plus this.
SLACK = 0.100
#: The event-loop probe: it needs no upstream call, so no budget.
PROBE = b'{"query": "{ __typename }"}'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--qps", type=int, default=50, help="simulator and gateway limit")
    parser.add_argument("--factor", type=float, default=10.0, help="ids/s over the limit")
    parser.add_argument("--per-query", type=int, default=5, help="ids per query (1: job(id:))")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the load lasts")
    parser.add_argument("--deadline", type=float, default=2.0, help="GATEWAY_REQUEST_DEADLINE")
    parser.add_argument(
        "--client-timeout", type=float, default=None, help="x-request-timeout sent (seconds)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=20.0, help="SIMULATOR_LATENCY_MS (jitter: half)"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="GATEWAY_MAX_CONCURRENT_REQUESTS (unset: the gateway's default)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="GATEWAY_ADMISSION_MAX_WAIT (unset: the gateway's default)",
    )
    parser.add_argument(
        "--target-wait",
        type=float,
        default=None,
        help="GATEWAY_ADMISSION_TARGET_WAIT (unset: the gateway's default)",
    )
    parser.add_argument(
        "--max-late-ms", type=float, default=50.0, help="the generator's p99 lateness allowed"
    )
    parser.add_argument(
        "--probe-interval", type=float, default=0.1, help="seconds between { __typename } probes"
    )
    args = parser.parse_args(argv)
    try:
        return run_benchmark(args)
    except RuntimeError as exc:  # a server failed to start or answered wrongly: no figures
        print(f"SETUP FAILED: {exc}")
        print(f"RESULT {NAME} valid=no reason=setup")
        return 2
    except KeyboardInterrupt:
        # ServerGroup has stopped every server by the time the interrupt gets here.
        print("interrupted: no result", file=sys.stderr)
        return 130


def run_benchmark(args: argparse.Namespace) -> int:
    removed = scrub_environment()
    if removed:
        print(f"ignoring (removed from the children's environment): {', '.join(removed)}")
    deadline = args.deadline
    if args.client_timeout is not None:
        deadline = min(deadline, args.client_timeout)
    ids_rate = args.qps * args.factor
    rate = ids_rate / args.per_query
    # Enough idle connections for every request that can be out at once (answers come by the
    # deadline), so that none pays for a handshake.
    connections = math.ceil(rate * (deadline + 0.5)) + 8
    headers = (
        {} if args.client_timeout is None else {"x-request-timeout": f"{args.client_timeout:g}"}
    )
    window = GatewaySettings().upstream_window

    with ServerGroup() as group:
        print(f"phase 1, client check: the schedule's {rate:g} requests/s against a null server")
        check_generator(group, rate=rate, seconds=3.0, connections=connections)
        simulator = group.start(
            "simulator",
            ["-m", "gateway", "simulator", "--host", HOST, "--port", "{port}"],
            env={
                "SIMULATOR_QPS": str(args.qps),
                "SIMULATOR_LATENCY_MS": f"{args.latency_ms:g}",
                "SIMULATOR_LATENCY_JITTER_MS": f"{args.latency_ms / 2:g}",
            },
            ready_path="/_simulator/health",
        )
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env={
                "GATEWAY_MPS_ENDPOINT": simulator.url,
                "GATEWAY_UPSTREAM_QPS": str(args.qps),
                "GATEWAY_REQUEST_DEADLINE": f"{args.deadline:g}",
                # Room for every connection of the generator and the probe: beyond its cap the
                # gateway closes a connection at once, which would read as a lost answer.
                "GATEWAY_MAX_CONNECTIONS": str(connections + 16),
                **(
                    {}
                    if args.max_concurrent is None
                    else {"GATEWAY_MAX_CONCURRENT_REQUESTS": str(args.max_concurrent)}
                ),
                **(
                    {}
                    if args.max_wait is None
                    else {"GATEWAY_ADMISSION_MAX_WAIT": str(args.max_wait)}
                ),
                **(
                    {}
                    if args.target_wait is None
                    else {"GATEWAY_ADMISSION_TARGET_WAIT": str(args.target_wait)}
                ),
                # The simulator's published demo key pair (public on purpose, not a secret).
                "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
            },
            ready_path="/readyz",
        )
        print(
            f"phase 2, warm-up: 2 uncached ids, a pause of {window:.3f} s + 0.2 s, simulator "
            "stats reset"
        )
        warm_up(group, [gateway], simulator, window)
        header = f", x-request-timeout {args.client_timeout:g} s" if headers else ""
        print(
            f"phase 3, run: {ids_rate:g} fresh ids/s ({args.factor:g} x the limit of {args.qps} "
            f"calls/s) as {rate:g} {'job(id:)' if args.per_query == 1 else 'jobs(ids:)'} "
            f"queries/s of {args.per_query} for {args.seconds:g} s, open loop; deadline "
            f"{args.deadline:g} s{header}; upstream latency {args.latency_ms:g} ms +- "
            f"{args.latency_ms / 2:g}"
        )

        def request_for(number: int, port: int) -> bytes:
            body = payload(ids_of(number, args.per_query))
            return post_request(HOST, port, "/graphql", body, headers)

        async def load_and_probe() -> tuple[OpenLoopRun, list[float]]:
            stop = asyncio.Event()
            probing = asyncio.ensure_future(probe(gateway, args.probe_interval, stop))
            try:
                load = await open_loop(
                    HOST,
                    [gateway.port],
                    request_for,
                    rate=rate,
                    duration=args.seconds,
                    answer_timeout=args.deadline + 10.0,
                    connections=connections,
                )
            finally:
                stop.set()
            return load, await probing

        pid = gateway.process.pid
        before = (cpu_seconds(pid), run_queue_seconds(pid))
        load, probes = run(load_and_probe)
        after = (cpu_seconds(pid), run_queue_seconds(pid))
        stats = simulator_action_stats(simulator, ACTION)
        try:
            budget = readiness(gateway).get("budget") or {}
        except httpx.TimeoutException:
            # A gateway still swamped by its backlog: the figures stand without this readout.
            budget = {"readyz": "no answer within 10 s"}

    seconds = max(load.elapsed, 1e-9)
    cpu = [
        None if b is None or a is None else (a - b) / seconds
        for b, a in zip(before, after, strict=True)
    ]
    return report(args, deadline, load, probes, stats, budget, cpu[0], cpu[1])


async def probe(gateway: Server, interval: float, stop: asyncio.Event) -> list[float]:
    """`{ __typename }` every `interval` on a connection of its own, one at a time, until
    `stop`: the gateway's event-loop lag (the query needs no budget), in seconds."""
    exchange = await Exchange.open(HOST, gateway.port)
    request = post_request(HOST, gateway.port, "/graphql", PROBE)
    latencies: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            status, _ = await exchange.send(request)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"A {{ __typename }} probe was answered HTTP {status}.")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, started + interval - time.perf_counter())
                )
    finally:
        exchange.close()
    return latencies


def ids_of(number: int, per_query: int) -> list[str]:
    """The fresh ids of request `number`."""
    return [fresh_id(number * per_query + index) for index in range(per_query)]


def report(
    args: argparse.Namespace,
    deadline: float,
    load: OpenLoopRun,
    probes: list[float],
    stats: dict[str, int],
    budget: dict[str, object],
    gateway_cores: float | None,
    gateway_waited: float | None,
) -> int:
    tally = Tally()
    for outcome in load.outcomes:
        tally.add(ids_of(outcome.number, args.per_query), outcome)
    latencies = [outcome.latency for outcome in load.outcomes if outcome.latency is not None]
    ms = {q: 1000 * percentile(latencies, q) for q in (0.5, 0.99, 1.0)}
    late_p99 = 1000 * percentile(load.lateness, 0.99)
    calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    served_rate = tally.answered / max(load.elapsed, 1e-9)
    calls_rate = calls / max(load.elapsed, 1e-9)
    p99_ratio = ms[0.99] / 1000 / deadline
    late = [
        outcome
        for outcome in load.outcomes
        if outcome.latency is not None and outcome.latency > deadline + SLACK
    ]
    over = [outcome.latency - deadline for outcome in late if outcome.latency is not None]

    print("phase 4, readouts:")
    print(f"  generator: {load.describe()}")
    for line in tally.describe():
        print(f"  {line}")
    print(
        f"  answer times (write to last byte): p50 {ms[0.5]:.0f} ms, p99 {ms[0.99]:.0f} ms, "
        f"max {ms[1.0]:.0f} ms, against a deadline of {1000 * deadline:.0f} ms; "
        f"{len(over)} answers later than deadline + {1000 * SLACK:.0f} ms"
    )
    if late:
        # Refused late (shed, or refused by the budget) or answered late: where the time went.
        kinds = Counter(_first_code(outcome.body) for outcome in late)
        print(f"  late answers by their first error code: {dict(kinds.most_common())}")
    print(
        f"  simulator {ACTION}: {calls} calls ({calls_rate:.1f}/s over {load.elapsed:.2f} s, "
        f"first tick to last answer), {throttled} throttled, peak {peak} in a rolling second "
        f"(limit {args.qps})"
    )
    print(
        f"  ids answered: {served_rate:.1f}/s = {served_rate / args.qps:.3f} x the limit; "
        f"upstream calls {calls_rate / args.qps:.3f} x the limit (a call still under way at "
        "its deadline is paid for, and its id refused)"
    )
    cpu_per_request = (
        "n/a"
        if gateway_cores is None
        else f"{1000 * gateway_cores * load.elapsed / max(len(load.outcomes), 1):.2f}"
    )
    # Answers late for want of a core are the machine's, not the budget's: say which.
    print(
        f"  gateway: {_share(gateway_cores)} cores used ({cpu_per_request} ms of CPU per "
        f"request), and {_share(gateway_waited)} s per second of the run ready to run but "
        "waiting for a core (other work on this machine); "
        f"{{ __typename }} every {1000 * args.probe_interval:.0f} ms answered in p50 "
        f"{1000 * percentile(probes, 0.5):.1f} ms, p99 {1000 * percentile(probes, 0.99):.1f} "
        f"ms, max {1000 * max(probes, default=0.0):.1f} ms (its event loop's lag)"
    )
    print(f"  gateway budget after the run: {budget}")
    problems = tally.invalidities()
    problems += [
        text
        for failed, text in (
            (peak > args.qps, f"peak window {peak} over the limit {args.qps}"),
            (throttled > 0, f"{throttled} calls throttled by the simulator"),
            (
                late_p99 > args.max_late_ms,
                f"the generator was late (p99 {late_p99:.1f} ms > {args.max_late_ms:g} ms)",
            ),
            (len(load.outcomes) < load.intended, "not every request of the schedule was sent"),
        )
        if failed
    ]
    goal = ms[0.99] / 1000 <= deadline + SLACK
    print(
        f"p99 / deadline = {p99_ratio:.3f}: {'meets' if goal else 'MISSES'} the goal of p99 <= "
        f"deadline + {1000 * SLACK:.0f} ms; served / limit = {served_rate / args.qps:.3f}"
    )
    if problems:
        print("FAILED: " + "; ".join(problems))
    share = 100 / max(tally.ids, 1)
    print(
        f"RESULT {NAME} p99_over_deadline={p99_ratio:.3f} served_over_limit="
        f"{served_rate / args.qps:.3f} p50_ms={ms[0.5]:.0f} p99_ms={ms[0.99]:.0f} "
        f"max_ms={ms[1.0]:.0f} deadline_ms={1000 * deadline:.0f} "
        f"answered_pct={share * tally.answered:.1f} refused_pct={share * tally.refused_ids:.1f} "
        f"peak_window={peak} throttled={throttled} late_p99_ms={late_p99:.1f} "
        f"valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _first_code(body: bytes) -> str:
    """The code of an answer's first error: `none` for an answer without errors."""
    try:
        errors = json.loads(body).get("errors") or []
    except ValueError:
        return "unreadable"
    if not errors:
        return "none"
    return str((errors[0].get("extensions") or {}).get("code") or "no code")


if __name__ == "__main__":
    raise SystemExit(main())
