"""Ten times the budget, open loop: does every answer still come by the request's deadline?

    .venv/bin/python -m bench.overload [--qps 50] [--factor 10] [--per-query 5] [--seconds 20]
                                       [--deadline 2] [--client-timeout S] [--latency-ms 20]

Child processes: a standalone simulator (SIMULATOR_QPS=qps, SIMULATOR_LATENCY_MS) and one
gateway in front of it (GATEWAY_MPS_ENDPOINT, GATEWAY_UPSTREAM_QPS=qps,
GATEWAY_REQUEST_DEADLINE, the demo key pair), as `bench.uncached_ids` starts them. This process
sends fresh ids (unknown to the simulator: one upstream call each) at `factor` times the budget,
open loop: `jobs(ids:)` queries of `--per-query` ids leave on a fixed schedule, whatever the
answers do, for `--seconds`. The gateway can serve one id in `factor`; the rest must be refused
(`BUDGET_EXHAUSTED` with a `retryAfter`, or `DEADLINE_EXCEEDED`), and no answer may come later
than the request's deadline: the goal is p99 <= deadline + 100 ms, answer times measured here
from writing the request to the last byte of its answer. `--client-timeout` sends
`x-request-timeout`, which makes the request's deadline the smaller of the two.

Ratios: p99 / deadline, and ids answered per second / the limit (how much of the account the
gateway still used while shedding nine tenths of the load).

Invalid (exit 1): the simulator's meter saw more than qps calls in a rolling second, or any
throttled call; any answer other than HTTP 200, an error without a code, a code other than
BUDGET_EXHAUSTED and DEADLINE_EXCEEDED, a BUDGET_EXHAUSTED without `retryAfter`, a request
without an answer; the generator itself late (p99 of how long after its tick a request left
over `--max-late-ms`: the answer times would then measure this process). Missing the goal is
reported, not an exit status.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python bench/overload.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answers import Tally, fresh_id, payload
from bench.loadgen import post_request, run
from bench.openloop import OpenLoopRun, check_generator, open_loop, percentile
from bench.processes import HOST, ServerGroup, cpu_seconds, scrub_environment
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
        "--max-late-ms", type=float, default=50.0, help="the generator's p99 lateness allowed"
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

        cpu_before = cpu_seconds(gateway.process.pid)
        load = run(
            lambda: open_loop(
                HOST,
                [gateway.port],
                request_for,
                rate=rate,
                duration=args.seconds,
                answer_timeout=args.deadline + 10.0,
                connections=connections,
            )
        )
        cpu_after = cpu_seconds(gateway.process.pid)
        stats = simulator_action_stats(simulator, ACTION)
        budget = readiness(gateway).get("budget") or {}

    gateway_cores = (
        None
        if cpu_before is None or cpu_after is None
        else (cpu_after - cpu_before) / max(load.elapsed, 1e-9)
    )
    return report(args, deadline, load, stats, budget, gateway_cores)


def ids_of(number: int, per_query: int) -> list[str]:
    """The fresh ids of request `number`."""
    return [fresh_id(number * per_query + index) for index in range(per_query)]


def report(
    args: argparse.Namespace,
    deadline: float,
    load: OpenLoopRun,
    stats: dict[str, int],
    budget: dict[str, object],
    gateway_cores: float | None,
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
    over = [
        outcome.latency - deadline
        for outcome in load.outcomes
        if outcome.latency is not None and outcome.latency > deadline + SLACK
    ]

    print("phase 4, readouts:")
    print(f"  generator: {load.describe()}")
    for line in tally.describe():
        print(f"  {line}")
    print(
        f"  answer times (write to last byte): p50 {ms[0.5]:.0f} ms, p99 {ms[0.99]:.0f} ms, "
        f"max {ms[1.0]:.0f} ms, against a deadline of {1000 * deadline:.0f} ms; "
        f"{len(over)} answers later than deadline + {1000 * SLACK:.0f} ms"
    )
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
    print(
        f"  gateway: {'n/a' if gateway_cores is None else f'{gateway_cores:.2f}'} cores during "
        f"the run; budget now {budget}"
    )
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


if __name__ == "__main__":
    raise SystemExit(main())
