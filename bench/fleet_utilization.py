"""3,000 uncached ids spread over a fleet of 3 gateways sharing 100 upstream calls/s: how close
to the account's limit does the fleet get, without ever going over it?

    .venv/bin/python -m bench.fleet_utilization [--replicas 3] [--ids 3000] [--per-query 100]
                                                [--qps 100] [--deadline 120]

Child processes: a private `redis-server` (nothing saved), a standalone simulator
(SIMULATOR_QPS=qps) and `--replicas` gateways (`python -m gateway serve`) pointed at both
(GATEWAY_MPS_ENDPOINT, GATEWAY_REDIS_URL, GATEWAY_UPSTREAM_QPS=qps for the whole fleet,
GATEWAY_EXPECTED_REPLICAS=replicas, GATEWAY_REQUEST_DEADLINE, the simulator's demo key pair).
At t=0 this process sends all ids at once as `jobs(ids: [...])` queries of `--per-query` ids,
query i to gateway i mod replicas (round-robin, like a load balancer), and times the last answer.

Each id costs exactly one upstream call, so the ideal is ids / qps seconds (the baseline of the
ratio): the fleet using the whole account's limit, all the time. Which budget the gateways run
on decides how close they can get, and is printed from their `/readyz`: the Redis budget shared
by the fleet (one sliding window for all), or, until it is wired in gateway/app.py, a local
budget of qps // replicas per process (33 of 100 here: safe, but 1 call/s of the account is never
used and each process needs 1,000 / 33 s for its share).

While the ids are served, `redis-cli MONITOR` (a child process) records every command the
gateways send to Redis: the round trips per upstream call are printed (the price of the shared
budget, cache and claims per id), beside Redis's own counters, which also count the commands
the scripts run.

The simulator's meter (reset just before t=0) proves the limit held across processes: peak in
any rolling second <= qps, nothing throttled, one call per id. Any of those broken, an id with an
error, or a wrong answer makes the run FAILED (exit 1). Missing the speed goal
(elapsed / ideal <= 1.05) is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python bench/fleet_utilization.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet import Fleet, start_fleet
from bench.processes import ServerGroup, run_main, scrub_environment_and_say
from bench.readouts import (
    RedisMonitor,
    fetcher_stats,
    redis_command_calls,
    reset_redis_stats,
    simulator_action_stats,
)
from bench.uncached import (
    Tally,
    format_answers,
    invalidities,
    make_ids,
    send_all,
    warm_up,
)
from gateway.settings import SimulatorSettings
from gateway.simulator.demo import demo_job_ids

NAME = "fleet_utilization"
GOAL = 1.05
ACTION = "QueryIProductionJob"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=3, help="gateway processes")
    parser.add_argument("--ids", type=int, default=3000, help="distinct ids in all")
    parser.add_argument("--per-query", type=int, default=100, help="ids per jobs(ids) query")
    parser.add_argument("--qps", type=int, default=100, help="the account's limit (both sides)")
    parser.add_argument("--deadline", type=float, default=120.0, help="GATEWAY_REQUEST_DEADLINE")
    args = parser.parse_args(argv)
    return run_main(NAME, lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    demo = demo_job_ids(SimulatorSettings())
    ids = make_ids(args.ids, demo)
    known = set(demo)
    queries = [ids[i : i + args.per_query] for i in range(0, len(ids), args.per_query)]

    with ServerGroup() as group:
        print(f"phase 1, start: redis, simulator, {args.replicas} gateways")
        fleet = start_fleet(
            group,
            replicas=args.replicas,
            upstream_qps=args.qps,
            simulator_qps=args.qps,
            gateway_env={"GATEWAY_REQUEST_DEADLINE": str(args.deadline)},
        )
        for line in fleet.describe():
            print(f"  {line}")
        print(
            f"phase 2, warm-up: 2 uncached ids per gateway (opens each upstream connection), "
            f"a pause of {fleet.budget_window():.3f} s + 0.2 s, simulator stats reset"
        )
        latency = warm_up(group, fleet.gateways, fleet.simulator, fleet.budget_window())
        reset_redis_stats(fleet.redis)
        print(
            f"phase 3, run: {len(ids)} distinct ids ({len(known & set(ids))} demo jobs, the "
            f"rest unknown to the simulator) in {len(queries)} concurrent queries of "
            f"{args.per_query}, round-robin over {args.replicas} gateways; limit {args.qps} "
            "calls/s for the fleet"
        )
        with RedisMonitor(fleet.redis) as monitor:
            elapsed, tally = asyncio.run(
                send_all(fleet.gateways, queries, known, args.deadline + 30)
            )
        stats = simulator_action_stats(fleet.simulator, ACTION)
        # Read before anything else asks the gateways (each /readyz PINGs Redis).
        redis_calls = redis_command_calls(fleet.redis)
        per_gateway = {gateway.name: fetcher_stats(gateway) for gateway in fleet.gateways}
        failover_lines, failovers = fleet.failovers()

    return report(
        args,
        fleet,
        queries,
        elapsed,
        tally,
        stats,
        per_gateway,
        latency,
        len(ids),
        failover_lines,
        failovers,
        redis_calls,
        monitor,
    )


def floor_seconds(fleet: Fleet, queries: list[list[str]], qps: int) -> tuple[float, int, str]:
    """The least time the live budget allows, without round trips: (seconds, waves, why).

    A budget lets a first burst of `limit` calls through at once, then each further wave of
    `limit` waits for the slots of the previous one, freed one window after each call completes.
    With one budget for the fleet that is ceil(ids / qps) waves; with a local share per process,
    each process runs its own waves on its own ids, and the slowest process sets the floor.
    """
    window = fleet.budget_window()
    if fleet.budget_shared:
        waves = math.ceil(sum(map(len, queries)) / qps)
        return (waves - 1) * window, waves, f"one budget of {qps} for the fleet"
    replicas = len(fleet.gateways)
    waves = 0
    for index, limit in enumerate(fleet.budget_limits()):
        assigned = sum(len(ids) for number, ids in enumerate(queries) if number % replicas == index)
        waves = max(waves, math.ceil(assigned / max(1, limit)))
    limits = "/".join(str(limit) for limit in fleet.budget_limits())
    return (waves - 1) * window, waves, f"a local budget per process ({limits})"


def report(
    args: argparse.Namespace,
    fleet: Fleet,
    queries: list[list[str]],
    elapsed: float,
    tally: Tally,
    stats: dict[str, int],
    per_gateway: dict[str, dict[str, int]],
    latency: float,
    count: int,
    failover_lines: list[str],
    failovers: int,
    redis_calls: dict[str, int],
    monitor: RedisMonitor,
) -> int:
    ideal = count / args.qps
    floor, waves, why = floor_seconds(fleet, queries, args.qps)
    ratio = elapsed / ideal
    calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    print("phase 4, readouts:")
    for line in format_answers(tally, elapsed):
        print(f"  {line}")
    print(
        "  last answer per gateway (s): "
        + ", ".join(f"{name} {at:.2f}" for name, at in sorted(tally.last_answer_by_gateway.items()))
    )
    print(
        f"  simulator {ACTION}: {calls} calls (expected {count}), {throttled} throttled, "
        f"peak {peak} in a rolling second (limit {args.qps})"
    )
    for name, fetcher in per_gateway.items():
        print(
            f"  {name} fetcher: {fetcher.get('upstream_calls', '?')} upstream calls (2 of them "
            f"at warm-up), {fetcher.get('retries', '?')} retries, "
            f"{fetcher.get('failures', '?')} failures, {fetcher.get('timeouts', '?')} timeouts"
        )
    # The shared budget's and cache's price: each command a gateway sends is one round trip
    # (a script call is one, whatever it runs); Redis's own counters add the scripts' commands.
    trips = sum(monitor.round_trips.values())
    per_call = trips / max(calls, 1)
    print(
        f"  redis round trips during the run: {trips} ({per_call:.2f} per upstream call, "
        f"{trips / max(count, 1):.2f} per id): {_listed(monitor.round_trips)}; commands the "
        f"scripts ran: {sum(monitor.scripted.values())} ({_listed(monitor.scripted)})"
    )
    for script, number in monitor.scripts.most_common():
        print(f"    evalsha {script}: {number} ({number / max(calls, 1):.2f} per upstream call)")
    # The counters' own readout and reset are left out.
    counted = {name: n for name, n in redis_calls.items() if name not in ("info", "config")}
    print(
        f"  redis commands counted by Redis (INFO commandstats, scripts' commands included): "
        f"{sum(counted.values())} ({sum(counted.values()) / max(calls, 1):.2f} per upstream "
        "call)"
    )
    # A failover mid-run means a process left the shared budget for its local share.
    for line in failover_lines:
        print(f"  {line}")
    budget = "shared" if fleet.budget_shared else "local-share"
    print(
        f"  elapsed {elapsed:.2f} s; ideal {ideal:.2f} s ({count} calls at {args.qps}/s); floor "
        f"with {why}: {floor:.2f} s + {waves} upstream round trips (one took "
        f"{1000 * latency:.0f} ms through a gateway, warm), i.e. ~{floor + waves * latency:.2f} s"
    )
    problems = invalidities(
        tally, calls=calls, expected_calls=count, throttled=throttled, peak=peak, limit=args.qps
    )
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"elapsed / ideal = {ratio:.3f}: {verdict} the goal of <= {GOAL} (budget: {budget})")
    if problems:
        print("FAILED: " + "; ".join(problems))
    print(
        f"RESULT {NAME} elapsed_over_ideal={ratio:.3f} elapsed={elapsed:.2f} floor={floor:.2f} "
        f"peak_window={peak} throttled={throttled} upstream_calls={calls} "
        f"errors={tally.errors} budget={budget} failovers={failovers} replicas={args.replicas} "
        f"redis_round_trips_per_call={per_call:.2f} valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {number}" for name, number in counts.most_common()) or "none"


if __name__ == "__main__":
    raise SystemExit(main())
