"""Redis killed and restarted again and again under saturating load: does the fleet keep the
account's limit through every transition, and how much of it does it use?

    .venv/bin/python -m bench.redis_outage [--replicas 2] [--qps 100] [--cycles 10] [--seed N]
                                           [--factor 2] [--per-query 5] [--deadline 3]

Child processes: a private `redis-server` (nothing saved), a standalone simulator
(SIMULATOR_QPS=qps) and `--replicas` gateways sharing the Redis (GATEWAY_REDIS_URL,
GATEWAY_EXPECTED_REPLICAS=replicas, GATEWAY_UPSTREAM_QPS=qps for the fleet,
GATEWAY_REQUEST_DEADLINE), as `bench.fleet` starts them. This process sends fresh ids (one
upstream call each) at `--factor` times the limit, open loop, round-robin over the gateways,
while a thread kills Redis (SIGKILL: everything it held is gone) and starts it again on the same
port, `--cycles` times (2 transitions each), after `--lead` seconds of normal service and at
moments drawn from `--seed` (printed; pass it again to replay a run). Another thread reads the
simulator's call counter every `--sample` seconds, to tell the calls of each phase apart:

- healthy: the fleet on the Redis budget; calls/s against the limit;
- outage, settling in: the first window after the kill, when no process may grant a local slot
  yet (the fleet's last second through Redis still counts upstream);
- outage, settled: each process on its local share (qps // replicas); calls/s against the sum
  of the shares;
- coming back: `--settle-back` seconds after Redis answers again, while each process returns at
  its next probe and keeps within its share for a while more.

Invalid (exit 1): the simulator saw more than qps calls in a rolling second, or throttled any
call; a client got anything but HTTP 200, an error without a code, a code other than
BUDGET_EXHAUSTED and DEADLINE_EXCEEDED, a BUDGET_EXHAUSTED without `retryAfter`, or no answer
(see `bench.answers`); the generator was late (p99 over `--max-late-ms`). The utilization
ratios are reported, not an exit status.
"""

from __future__ import annotations

import argparse
import enum
import itertools
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

if not __package__:  # run as `python bench/redis_outage.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answers import Tally, fresh_id, payload
from bench.fleet import Fleet, start_fleet
from bench.loadgen import post_request, run
from bench.openloop import OpenLoopRun, check_generator, open_loop, percentile
from bench.processes import HOST, Server, ServerGroup, run_main, scrub_environment_and_say
from bench.readouts import failover_switches, process_failovers, readiness, simulator_action_stats
from bench.uncached import warm_up

NAME = "redis_outage"
ACTION = "QueryIProductionJob"


class Phase(enum.Enum):
    HEALTHY = "healthy"
    SETTLING_IN = "outage, settling in"
    SETTLED = "outage, settled"
    COMING_BACK = "coming back"


@dataclass(slots=True)
class Outage:
    """One kill and restart, on `time.perf_counter`."""

    killed: float
    #: When the new Redis answered PING (it listens a little earlier: the outage as measured
    #: here is at most one PING poll, 100 ms, too long).
    back: float = math.inf


@dataclass(slots=True)
class Chaos:
    """Kills and restarts the fleet's Redis in a thread, on a seeded schedule."""

    group: ServerGroup
    redis: Server
    #: Seconds of normal service before the first kill.
    lead: float
    #: (seconds down, seconds up after it) per cycle.
    schedule: list[tuple[float, float]]
    outages: list[Outage] = field(default_factory=list)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30.0)

    def _run(self) -> None:
        try:
            if self.stop.wait(self.lead):
                return
            for number, (down, up) in enumerate(self.schedule, start=2):
                self.group.kill(self.redis)
                outage = Outage(time.perf_counter())
                self.outages.append(outage)
                if self.stop.wait(down):
                    return
                self.redis = self.group.start_redis(f"redis-{number}", port=self.redis.port)
                outage.back = time.perf_counter()
                if self.stop.wait(up):
                    return
        except BaseException as exc:  # reported by the main thread
            self.error = exc


@dataclass(slots=True)
class Sampler:
    """Reads the simulator's call counter every `interval` seconds in a thread."""

    simulator: Server
    interval: float
    #: (time.perf_counter, calls so far) pairs.
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10.0)

    def _run(self) -> None:
        url = f"{self.simulator.url}/_simulator/stats"
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                while not self.stop.is_set():
                    asked = time.perf_counter()
                    calls = int(client.get(url).json()["actions"][ACTION]["calls"])
                    self.samples.append(((asked + time.perf_counter()) / 2, calls))
                    self.stop.wait(max(0.0, self.interval - (time.perf_counter() - asked)))
        except BaseException as exc:  # reported by the main thread
            self.error = exc


@dataclass(frozen=True, slots=True)
class GatewaySeen:
    name: str
    status: str
    failovers: int
    degraded: bool
    #: Lines of its log with a traceback or an ERROR.
    errors_logged: int


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=2, help="gateway processes")
    parser.add_argument("--qps", type=int, default=100, help="the account's limit (both sides)")
    parser.add_argument("--factor", type=float, default=2.0, help="ids/s over the limit")
    parser.add_argument("--per-query", type=int, default=5, help="ids per query (1: job(id:))")
    parser.add_argument("--deadline", type=float, default=3.0, help="GATEWAY_REQUEST_DEADLINE")
    parser.add_argument("--cycles", type=int, default=10, help="kills (and restarts) of Redis")
    parser.add_argument("--seed", type=int, default=None, help="of the schedule (default: new)")
    parser.add_argument("--down", type=float, nargs=2, default=(0.3, 3.0), help="min max s")
    parser.add_argument("--up", type=float, nargs=2, default=(0.5, 6.0), help="min max s")
    parser.add_argument("--lead", type=float, default=4.0, help="healthy seconds before")
    parser.add_argument("--tail", type=float, default=6.0, help="load seconds after the last")
    parser.add_argument(
        "--settle-back",
        type=float,
        default=4.0,
        help="seconds after a restart counted as coming back (probe 1 s + Redis timeout 0.5 s + "
        "settling back, up to 2.5 s)",
    )
    parser.add_argument("--sample", type=float, default=0.1, help="simulator counter period")
    parser.add_argument(
        "--max-late-ms", type=float, default=50.0, help="the generator's p99 lateness allowed"
    )
    args = parser.parse_args(argv)
    return run_main(NAME, lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    schedule = [(rng.uniform(*args.down), rng.uniform(*args.up)) for _ in range(args.cycles)]
    ids_rate = args.qps * args.factor
    rate = ids_rate / args.per_query
    connections = math.ceil(rate / args.replicas * (args.deadline + 0.5)) + 8
    # A restart takes some tens of milliseconds: allowed a second each, the load outlasts it.
    duration = args.lead + sum(down + up for down, up in schedule) + args.tail + args.cycles
    share = max(1, args.qps // args.replicas)

    with ServerGroup() as group:
        print(f"phase 1, client check: the schedule's {rate:g} requests/s against a null server")
        check_generator(group, rate=rate, seconds=2.0, connections=connections, ports=args.replicas)
        print(f"phase 2, start: redis, simulator, {args.replicas} gateways")
        fleet = start_fleet(
            group,
            replicas=args.replicas,
            upstream_qps=args.qps,
            simulator_qps=args.qps,
            gateway_env={"GATEWAY_REQUEST_DEADLINE": f"{args.deadline:g}"},
        )
        for line in fleet.describe():
            print(f"  {line}")
        window = fleet.budget_window()
        warm_up(group, fleet.gateways, fleet.simulator, window)
        print(
            f"phase 3, run: {ids_rate:g} fresh ids/s ({args.factor:g} x the limit of {args.qps}"
            f" calls/s; {share} per process while Redis is down) as {rate:g} queries/s of "
            f"{args.per_query}, open loop, round-robin, for {duration:.1f} s; deadline "
            f"{args.deadline:g} s; seed {seed}: after {args.lead:g} s, {args.cycles} x (down, up)"
            " s = " + ", ".join(f"({down:.2f}, {up:.2f})" for down, up in schedule)
        )
        chaos = Chaos(group, fleet.redis, args.lead, schedule)
        sampler = Sampler(fleet.simulator, args.sample)

        def request_for(number: int, port: int) -> bytes:
            return post_request(HOST, port, "/graphql", payload(ids_of(number, args.per_query)))

        sampler.start()
        chaos.start()
        try:
            load = run(
                lambda: open_loop(
                    HOST,
                    [gateway.port for gateway in fleet.gateways],
                    request_for,
                    rate=rate,
                    duration=duration,
                    answer_timeout=args.deadline + 10.0,
                    connections=connections,
                )
            )
        finally:
            chaos.join()
            sampler.join()
        for worker in (chaos, sampler):
            if worker.error is not None:
                raise RuntimeError(f"The {type(worker).__name__} thread failed: {worker.error!r}")
        stats = simulator_action_stats(fleet.simulator, ACTION)
        seen = [_seen(gateway) for gateway in fleet.gateways]
        failover_lines, _ = fleet.failovers()

    return report(
        args, fleet, seed, load, chaos.outages, sampler.samples, stats, seen, failover_lines
    )


def ids_of(number: int, per_query: int) -> list[str]:
    """The fresh ids of request `number`."""
    return [fresh_id(number * per_query + index) for index in range(per_query)]


def _seen(gateway: Server) -> GatewaySeen:
    ready = readiness(gateway)
    degraded = any(part.get("degraded") for part in failover_switches(ready).values())
    log = gateway.log_path.read_text(errors="replace").splitlines()
    errors = sum(1 for line in log if "Traceback" in line or " ERROR " in line)
    return GatewaySeen(
        gateway.name, str(ready.get("status")), process_failovers(ready), degraded, errors
    )


def phase_at(moment: float, outages: list[Outage], settle_in: float, settle_back: float) -> Phase:
    """Which phase the fleet was in at `moment` (see the module docstring)."""
    for index, outage in enumerate(outages):
        next_kill = outages[index + 1].killed if index + 1 < len(outages) else math.inf
        if outage.killed <= moment < outage.back:
            return Phase.SETTLING_IN if moment < outage.killed + settle_in else Phase.SETTLED
        if outage.back <= moment < min(outage.back + settle_back, next_kill):
            return Phase.COMING_BACK
    return Phase.HEALTHY


def calls_by_phase(
    samples: list[tuple[float, int]],
    outages: list[Outage],
    *,
    start: float,
    end: float,
    settle_in: float,
    settle_back: float,
) -> tuple[Counter[Phase], dict[Phase, float]]:
    """(calls, seconds) per phase between `start` and `end`: each interval between two
    samples goes to the phase of its middle."""
    calls: Counter[Phase] = Counter()
    seconds: dict[Phase, float] = dict.fromkeys(Phase, 0.0)
    kept = [(at, count) for at, count in samples if start <= at <= end]
    for (before, count_before), (after, count_after) in itertools.pairwise(kept):
        phase = phase_at((before + after) / 2, outages, settle_in, settle_back)
        calls[phase] += count_after - count_before
        seconds[phase] += after - before
    return calls, seconds


def sampled_peaks(
    samples: list[tuple[float, int]],
    outages: list[Outage],
    *,
    start: float,
    end: float,
    window: float,
    settle_in: float,
    settle_back: float,
) -> Counter[Phase]:
    """Per phase, the most calls between two samples at most `window` apart with every
    interval between them in that phase: the rolling count as the samples see it (up to one
    sampling period short of a whole window), to hold against the phase's own limit."""
    kept = [(at, count) for at, count in samples if start <= at <= end]
    phases = [
        phase_at((before[0] + after[0]) / 2, outages, settle_in, settle_back)
        for before, after in itertools.pairwise(kept)
    ]
    peaks: Counter[Phase] = Counter()
    for first in range(len(phases)):
        last = first
        while (
            last + 1 < len(kept)
            and kept[last + 1][0] - kept[first][0] <= window
            and phases[last] == phases[first]
        ):
            last += 1
        phase = phases[first]
        peaks[phase] = max(peaks[phase], kept[last][1] - kept[first][1])
    return peaks


def report(
    args: argparse.Namespace,
    fleet: Fleet,
    seed: int,
    load: OpenLoopRun,
    outages: list[Outage],
    samples: list[tuple[float, int]],
    stats: dict[str, int],
    seen: list[GatewaySeen],
    failover_lines: list[str],
) -> int:
    tally = Tally()
    for outcome in load.outcomes:
        tally.add(ids_of(outcome.number, args.per_query), outcome)
    window = fleet.budget_window()
    share = max(1, args.qps // args.replicas)
    shares = share * args.replicas
    end = load.started + load.intended / load.rate
    calls, seconds = calls_by_phase(
        samples,
        outages,
        start=load.started,
        end=end,
        settle_in=window,
        settle_back=args.settle_back,
    )
    peaks = sampled_peaks(
        samples,
        outages,
        start=load.started,
        end=end,
        window=window,
        settle_in=window,
        settle_back=args.settle_back,
    )
    total_calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    late_p99 = 1000 * percentile(load.lateness, 0.99)
    latencies = [outcome.latency for outcome in load.outcomes if outcome.latency is not None]
    restarted = sum(1 for outage in outages if math.isfinite(outage.back))

    print("phase 4, readouts:")
    print(f"  generator: {load.describe()}")
    print(
        f"  transitions: {len(outages)} kills, {restarted} restarts (seed {seed}); outages "
        "of " + ", ".join(f"{outage.back - outage.killed:.2f}" for outage in outages) + " s"
    )
    for line in tally.describe():
        print(f"  {line}")
    print(
        f"  answer times: p50 {1000 * percentile(latencies, 0.5):.0f} ms, p99 "
        f"{1000 * percentile(latencies, 0.99):.0f} ms, max "
        f"{1000 * max(latencies, default=0.0):.0f} ms (deadline {1000 * args.deadline:.0f} ms)"
    )
    print(
        f"  simulator {ACTION}: {total_calls} calls, {throttled} throttled, peak {peak} in a "
        f"rolling second (limit {args.qps})"
    )
    rates: dict[Phase, float] = {}
    for phase in Phase:
        if seconds[phase] <= 0:
            print(f"  {phase.value}: no time in this phase")
            continue
        rates[phase] = calls[phase] / seconds[phase]
        print(
            f"  {phase.value}: {seconds[phase]:.1f} s, {calls[phase]} calls, "
            f"{rates[phase]:.1f} calls/s = {rates[phase] / args.qps:.2f} x the limit, "
            f"{rates[phase] / shares:.2f} x the local shares ({args.replicas} x {share}); "
            f"at most {peaks[phase]} calls in a sampled window"
        )
    for gateway in seen:
        recoveries = gateway.failovers - int(gateway.degraded)
        print(
            f"  {gateway.name}: {gateway.failovers} failovers and {recoveries} recoveries of "
            f"{len(outages)} outages; status {gateway.status} at the end; "
            f"{gateway.errors_logged} log lines with ERROR or a traceback"
        )
    for line in failover_lines:
        print(f"  {line}")
    healthy = rates.get(Phase.HEALTHY, 0.0) / args.qps
    settled = rates.get(Phase.SETTLED, 0.0) / shares
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
            (len(outages) < args.cycles, f"only {len(outages)} of {args.cycles} kills happened"),
        )
        if failed
    ]
    print(
        f"utilization: healthy {healthy:.2f} x the limit, outages (settled) {settled:.2f} x "
        f"the local shares (at most {peaks[Phase.SETTLED]} of {shares} calls in a sampled "
        f"window); peak {peak} of {args.qps}, {throttled} throttled"
    )
    if problems:
        print("FAILED: " + "; ".join(problems))
    codes = ",".join(f"{code}:{count}" for code, count in tally.refused.most_common()) or "none"
    print(
        f"RESULT {NAME} peak_window={peak} limit={args.qps} throttled={throttled} "
        f"healthy_over_limit={healthy:.2f} outage_over_shares={settled:.2f} "
        f"outage_sampled_peak={peaks[Phase.SETTLED]} "
        f"transitions={len(outages) + restarted} "
        f"failovers={'/'.join(str(gateway.failovers) for gateway in seen)} "
        f"answered_pct={100 * tally.answered / max(tally.ids, 1):.1f} refused={codes} "
        f"http_5xx={sum(n for status, n in tally.statuses.items() if status >= 500)} "
        f"seed={seed} valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
