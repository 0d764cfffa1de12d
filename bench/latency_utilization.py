"""How much of the upstream's limit the budget uses when each call takes time.

    .venv/bin/python -m bench.latency_utilization [--ids 1500] [--qps 100]
                                                  [--latencies 0,50:20,200:100]

For each upstream latency (mean:jitter, in ms; the simulator adds it to every call), a
standalone simulator (SIMULATOR_QPS, SIMULATOR_LATENCY_MS, SIMULATOR_LATENCY_JITTER_MS) and one
gateway in front of it (GATEWAY_UPSTREAM_QPS) run as child processes, and this process sends
`--ids` distinct uncached ids at once (each one upstream call), as `uncached_ids` does. The
budget holds each call's slot from its grant until one window after its answer (the rule that
keeps the account safe whatever the network does), so at a latency L it can make at most
`qps / (window + L)` calls per second: the rule's ceiling, printed beside the rate reached.

Reported per latency, all from the simulator's meter:
- the sustained rate: calls per second arriving upstream once the budget is saturated, as a
  fraction of the limit and of the rule's ceiling. It is the mean of the simulator's per-second
  arrival counts from the third second of the run to the one before its last: the first second
  holds the burst of `qps` calls that an idle budget lets go at once, the second the wait for
  those slots to come back (one window plus the latency), and the last is cut short by the end
  of the ids. This is the figure the goal is about.
- the batch rate: `(ids - qps)` over the time from sending the ids to the last answer, as the
  bench reported before the sustained rate. It charges the run's start and end to the rate: once
  grants are spread (`gateway.budget.pacing`), the last lap's calls trickle out over a window
  where lumped laps would have gone at once, which a batch of 15 laps pays as 1/15 of its time.
- the peak in any rolling second and the throttled calls, and how many upstream connections the
  gateway opened (`/readyz`'s `upstreamConnections`): each is a handshake inside a slot.
A run with a peak over the limit, a throttled call, an error or a wrong answer, or too few
saturated seconds to measure, is invalid (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python bench/latency_utilization.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import HOST, ServerGroup, run_main, scrub_environment
from bench.readouts import readiness, simulator_action_stats, simulator_arrivals_per_second
from bench.uncached import invalidities, make_ids, send_all, warm_up
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
    SimulatorSettings,
)
from gateway.simulator.demo import demo_job_ids

ACTION = "QueryIProductionJob"
#: Goals: the fraction of the limit reached at 50 ms (the rule's ceiling there is about 0.95).
GOAL_AT_50_MS = 0.93
#: Whole seconds of a run left out of the sustained rate: the first two (the idle budget's
#: burst, then the wait for its slots) and the last (cut short by the end of the ids).
SKIPPED_FIRST, SKIPPED_LAST = 2, 1
#: Fewest saturated seconds a sustained rate is measured over.
MIN_SATURATED_SECONDS = 5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ids", type=int, default=1500, help="distinct ids per latency")
    parser.add_argument("--qps", type=int, default=100, help="simulator and gateway limit")
    parser.add_argument(
        "--latencies", default="0,50:20,200:100", help="mean[:jitter] ms, comma-separated"
    )
    args = parser.parse_args(argv)
    return run_main("latency_utilization", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment()
    window = GatewaySettings().upstream_window
    demo = demo_job_ids(SimulatorSettings())
    results: list[str] = []
    invalid: list[str] = []
    for spec in args.latencies.split(","):
        mean, _, jitter = spec.partition(":")
        mean_ms, jitter_ms = float(mean), float(jitter or 0)
        ids = make_ids(args.ids, demo)
        run = measure(args, ids, set(demo), mean_ms, jitter_ms)
        ceiling = args.qps / (window + mean_ms / 1000)
        share, of_ceiling = run.sustained / args.qps, run.sustained / ceiling
        batch_share = run.batch / args.qps
        print(
            f"latency {mean_ms:.0f} +- {jitter_ms:.0f} ms: sustained {run.sustained:.1f} calls/s "
            f"= {share:.3f} of the limit, {of_ceiling:.3f} of the rule's ceiling "
            f"({ceiling:.1f}/s) over {len(run.saturated)} s; batch {run.batch:.1f} calls/s = "
            f"{batch_share:.3f}; peak {run.peak}, {run.throttled} throttled"
        )
        print(f"  calls per second upstream: {run.per_second}")
        print(
            f"  {run.connections_opened} upstream connections opened for {len(ids)} calls "
            "(the rest ran on warm keep-alive connections)"
        )
        if mean_ms == 50:
            verdict = "meets" if share >= GOAL_AT_50_MS else "MISSES"
            print(f"  at 50 ms: {share:.3f} of the limit {verdict} the goal of >= {GOAL_AT_50_MS}")
        label = f"{mean_ms:.0f}ms"
        results.append(f"share_{label}={share:.3f} batch_{label}={batch_share:.3f}")
        problems = run.problems
        invalid += [f"{mean_ms:.0f} ms: {problem}" for problem in problems]
    if invalid:
        print("FAILED: " + "; ".join(invalid))
    print(f"RESULT latency_utilization {' '.join(results)} valid={'no' if invalid else 'yes'}")
    return 1 if invalid else 0


@dataclass(frozen=True)
class Run:
    """What one latency's run measured (see the module docstring)."""

    sustained: float
    batch: float
    per_second: list[int]
    saturated: list[int]
    peak: int
    throttled: int
    #: Upstream connections the gateway opened (the warm-up's included).
    connections_opened: int
    problems: list[str]


def measure(
    args: argparse.Namespace, ids: list[str], known: set[str], mean_ms: float, jitter_ms: float
) -> Run:
    with ServerGroup() as group:
        simulator = group.start(
            "simulator",
            ["-m", "gateway", "simulator", "--host", HOST, "--port", "{port}"],
            env={
                "SIMULATOR_QPS": str(args.qps),
                "SIMULATOR_LATENCY_MS": str(mean_ms),
                "SIMULATOR_LATENCY_JITTER_MS": str(jitter_ms),
            },
            ready_path="/_simulator/health",
        )
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env={
                "GATEWAY_MPS_ENDPOINT": simulator.url,
                "GATEWAY_UPSTREAM_QPS": str(args.qps),
                "GATEWAY_REQUEST_DEADLINE": "120",
                "GATEWAY_LOG_LEVEL": "WARNING",
                # The simulator's published demo key pair (public on purpose, not a secret).
                "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
            },
            ready_path="/healthz",
        )
        margin = GatewaySettings().upstream_window_margin
        warm_up(group, [gateway], simulator, 1.0 + margin)
        queries = [ids[i : i + 100] for i in range(0, len(ids), 100)]
        elapsed, tally = asyncio.run(send_all([gateway], queries, known, 150.0))
        stats = simulator_action_stats(simulator, ACTION)
        per_second = simulator_arrivals_per_second(simulator, ACTION)
        opened = readiness(gateway)["upstreamConnections"]["opened"]
    calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    # The first `qps` calls go at once; the rest are paced: their rate is the budget's.
    batch = (len(ids) - args.qps) / elapsed if elapsed > 0 else 0.0
    saturated = per_second[SKIPPED_FIRST : len(per_second) - SKIPPED_LAST]
    sustained = sum(saturated) / len(saturated) if saturated else 0.0
    problems = invalidities(
        tally, calls=calls, expected_calls=len(ids), throttled=throttled, peak=peak, limit=args.qps
    )
    if len(saturated) < MIN_SATURATED_SECONDS:
        problems.append(
            f"only {len(saturated)} saturated seconds to measure (at least "
            f"{MIN_SATURATED_SECONDS}): send more --ids"
        )
    return Run(sustained, batch, per_second, saturated, peak, throttled, opened, problems)


if __name__ == "__main__":
    raise SystemExit(main())
