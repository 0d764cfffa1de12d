"""2,000 distinct uncached ids at an upstream limit of 100 calls/s: how close to the limit?

    .venv/bin/python -m bench.uncached_ids [--ids 2000] [--per-query 100] [--qps 100]

A standalone simulator (`python -m gateway simulator`, SIMULATOR_QPS) and one gateway pointed at
it (GATEWAY_MPS_ENDPOINT, GATEWAY_UPSTREAM_QPS, the simulator's demo key pair) run as child
processes. At t=0 this process sends all the ids at once, as `jobs(ids: [...])` queries of
`--per-query` ids each, and measures the time until the last answer. Each id costs exactly one
upstream call, so the ideal is ids / qps seconds (the baseline of the ratio); the budget lets a
first burst of qps calls through at once, so the true floor is a little lower (printed too).

The simulator's own meter (GET /_simulator/stats, reset just before the run) proves the limit
held: its peak in any rolling second must not exceed the limit, nothing may be throttled, and it
must have seen one call per id. Any of those broken, an id answered with an error, or a wrong
answer makes the run FAILED (exit 1). Missing the speed goal (elapsed / ideal <= 1.05) is
reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python bench/uncached_ids.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import HOST, ServerGroup, run_main, scrub_environment_and_say
from bench.readouts import fetcher_stats, simulator_action_stats
from bench.uncached import (
    Tally,
    format_answers,
    invalidities,
    make_ids,
    send_all,
    warm_up,
)
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
    SimulatorSettings,
)
from gateway.simulator.demo import demo_job_ids

GOAL = 1.05
ACTION = "QueryIProductionJob"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ids", type=int, default=2000, help="distinct ids in all")
    parser.add_argument("--per-query", type=int, default=100, help="ids per jobs(ids) query")
    parser.add_argument("--qps", type=int, default=100, help="simulator and gateway limit")
    parser.add_argument("--deadline", type=float, default=60.0, help="GATEWAY_REQUEST_DEADLINE")
    args = parser.parse_args(argv)
    return run_main("uncached_ids", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    demo = demo_job_ids(SimulatorSettings())
    ids = make_ids(args.ids, demo)
    known = set(demo)
    margin = GatewaySettings().upstream_window_margin

    with ServerGroup() as group:
        simulator = group.start(
            "simulator",
            ["-m", "gateway", "simulator", "--host", HOST, "--port", "{port}"],
            env={"SIMULATOR_QPS": str(args.qps)},
            ready_path="/_simulator/health",
        )
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env={
                "GATEWAY_MPS_ENDPOINT": simulator.url,
                "GATEWAY_UPSTREAM_QPS": str(args.qps),
                "GATEWAY_REQUEST_DEADLINE": str(args.deadline),
                # The simulator's published demo key pair (public on purpose, not a secret).
                "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
            },
            ready_path="/readyz",
        )
        queries = [ids[i : i + args.per_query] for i in range(0, len(ids), args.per_query)]
        print(
            f"uncached_ids: {len(ids)} distinct ids ({len(known & set(ids))} demo jobs, the "
            f"rest unknown to the simulator) in {len(queries)} concurrent queries of "
            f"{args.per_query}; limit {args.qps} calls/s on both sides"
        )
        latency = warm_up(group, [gateway], simulator, 1.0 + margin)
        elapsed, tally = asyncio.run(send_all([gateway], queries, known, args.deadline + 30))
        stats = simulator_action_stats(simulator, ACTION)
        fetcher = fetcher_stats(gateway)

    return report(args, elapsed, tally, stats, fetcher, latency, margin, len(ids))


def report(
    args: argparse.Namespace,
    elapsed: float,
    tally: Tally,
    stats: dict[str, int],
    fetcher: dict[str, int],
    latency: float,
    margin: float,
    count: int,
) -> int:
    ideal = count / args.qps
    # A burst of qps calls at t=0, then each further wave of qps waits for the slots of the
    # previous one: freed one window (1 s + margin) after each call completes.
    waves = math.ceil(count / args.qps)
    floor = (waves - 1) * (1.0 + margin)
    ratio = elapsed / ideal
    calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    for line in format_answers(tally, elapsed):
        print(line)
    print(
        f"simulator {ACTION}: {calls} calls (expected {count}), {throttled} throttled, "
        f"peak {peak} in a rolling second (limit {args.qps})"
    )
    print(
        f"gateway fetcher: {fetcher.get('upstream_calls', '?')} upstream calls (2 of them at "
        f"warm-up), {fetcher.get('retries', '?')} retries, {fetcher.get('failures', '?')} "
        f"failures, {fetcher.get('timeouts', '?')} timeouts"
    )
    print(
        f"elapsed {elapsed:.2f} s; ideal {ideal:.2f} s ({count} calls at {args.qps}/s); floor "
        f"about {floor:.2f} s + {waves} upstream round trips (one took {1000 * latency:.0f} ms "
        f"through the gateway, warm), i.e. ~{floor + waves * latency:.2f} s"
    )
    problems = invalidities(
        tally, calls=calls, expected_calls=count, throttled=throttled, peak=peak, limit=args.qps
    )
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"elapsed / ideal = {ratio:.3f}: {verdict} the goal of <= {GOAL}")
    if problems:
        print("FAILED: " + "; ".join(problems))
    print(
        f"RESULT uncached_ids elapsed_over_ideal={ratio:.3f} elapsed={elapsed:.2f} "
        f"floor={floor:.2f} peak_window={peak} throttled={throttled} upstream_calls={calls} "
        f"errors={tally.errors} valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
