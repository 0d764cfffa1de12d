"""200 frontends polling the same 50 running jobs through 2 gateways: how many upstream calls
do the cache and the coalescing save?

    .venv/bin/python -m bench.coalescing [--gateways 2] [--jobs 50] [--clients 200]
                                         [--interval 0.5] [--seconds 20]

Child processes: a private `redis-server` (nothing saved), a standalone simulator and
`--gateways` gateways sharing the Redis (budget and snapshot cache), with the default
GATEWAY_CACHE_RUNNING_TTL (1 s). `--jobs` RUNNING jobs (State `Analysing`, fields shaped after
the simulator's own demo jobs in that state) are planted with `PUT /_simulator/jobs/{id}`.

Each simulated client is an asyncio task with its own keep-alive connection to one gateway
(client i to gateway i mod gateways). Every `--interval` seconds it sends one
`jobs(ids: [all the jobs])` query; clients start staggered uniformly over the first interval,
so they are not in lockstep. Like a frontend's poller, a client never has two polls in flight:
a poll whose answer is late delays the next one, and a tick missed entirely is skipped and
counted. So `sent` below `intended` means the machine (servers and this load generator, on the
same cores) could not keep the schedule: the output says so, and the scenario is never shrunk
silently (flags make smaller runs, on purpose only).

Baseline: the upstream calls a gateway without cache and coalescing would make, one per id per
poll = polls sent x jobs. Measured: the simulator's QueryIProductionJob calls during the run
(stats reset just before). The ratio baseline / measured is the reduction (goal >= 200). What
bounds the measured calls is the running ttl: about jobs x seconds / ttl (1,000) with one cache
shared by the fleet, about twice that if each process fetches the running snapshots for itself.

Every answer is checked (HTTP 200, no error, every job with its id and state ANALYSING); any
error, a throttled call or a peak over the limit makes the run invalid (exit 1). Missing the
goal is reported, not an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

if not __package__:  # run as `python bench/coalescing.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet import Fleet, start_fleet
from bench.loadgen import Exchange, post_request, run
from bench.processes import (
    ADMIN_HEADERS,
    HOST,
    Server,
    ServerGroup,
    cpu_seconds,
    machine_cpu_seconds,
    run_main,
    scrub_environment_and_say,
)
from bench.readouts import (
    fetcher_stats,
    redis_command_calls,
    reset_redis_stats,
    reset_simulator_stats,
    simulator_action_stats,
)
from gateway.settings import GatewaySettings

NAME = "coalescing"
GOAL = 200.0
ACTION = "QueryIProductionJob"
#: What a frontend polling progress asks: the state, and how old the snapshot is.
#: The poll: `fetchedAt`, from which the age of each snapshot served is computed here (same
#: machine, same clock), so that the answer may be kept while its snapshots are (see README,
#: "Answers that cannot change"). `--query age-seconds` asks `ageSeconds` instead, as the
#: bench did before: an answer that moves with the clock, executed every time.
QUERIES = {
    "fetched-at": "query Poll($ids: [ID!]!) { jobs(ids: $ids) { id state fetchedAt } }",
    "age-seconds": "query Poll($ids: [ID!]!) { jobs(ids: $ids) { id state ageSeconds } }",
}
#: The key of the whole machine's busy cores (everyone's processes) in `CpuUse.by_process`.
MACHINE = "whole machine"
#: The account's limit, on both sides; the fleet needs far less here (about jobs / ttl).
QPS = 100


@dataclass(slots=True)
class Polls:
    """What the clients did and saw, over the whole run."""

    intended: int = 0
    sent: int = 0
    #: Polls whose answer was right in every respect.
    ok: int = 0
    #: Ticks skipped because the client's previous poll was still out when the next began.
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: Seconds from sending a poll to its (right) answer.
    latencies: list[float] = field(default_factory=list)
    #: Seconds each poll left after its scheduled tick: how far the clients fell behind.
    lateness: list[float] = field(default_factory=list)
    #: The oldest snapshot any answer held (`ageSeconds`): the freshness the cache gave.
    max_age: float = 0.0
    #: Seconds from the first client's first tick to the last answer.
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Cores each process used during the run (None where /proc is missing)."""

    by_process: dict[str, float | None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=2, help="gateway processes")
    parser.add_argument("--jobs", type=int, default=50, help="running jobs every client polls")
    parser.add_argument("--clients", type=int, default=200, help="simulated frontends")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long clients poll")
    parser.add_argument(
        "--query",
        choices=sorted(QUERIES),
        default="fetched-at",
        help="what each poll asks besides id and state (see QUERIES)",
    )
    parser.add_argument("--poll-timeout", type=float, default=10.0, help="a poll's HTTP timeout")
    args = parser.parse_args(argv)
    return run_main(NAME, lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    # The default the gateways run with (the benchmark sets no GATEWAY_CACHE_RUNNING_TTL).
    ttl = GatewaySettings().cache_running_ttl
    # 32 hex characters, as the upstream's job ids; made up, so they exist once planted.
    ids = [
        hashlib.sha256(f"bench-coalescing-{n}".encode()).hexdigest()[:32] for n in range(args.jobs)
    ]
    polls_per_client = round(args.seconds / args.interval)

    with ServerGroup() as group:
        print(f"phase 1, start: redis, simulator, {args.gateways} gateways")
        fleet = start_fleet(group, replicas=args.gateways, upstream_qps=QPS, simulator_qps=QPS)
        for line in fleet.describe():
            print(f"  {line}")
        print(f"phase 2, plant: {len(ids)} jobs in state Analysing, shaped after the demo set's")
        plant_jobs(group, fleet.simulator, ids)
        check_through_gateways(group, fleet.gateways, ids, args.query)
        # Let the snapshots the check fetched expire, so that the run starts on a cold cache
        # (as polling starts in production), and count only the run's calls.
        time.sleep(ttl + 0.2)
        reset_simulator_stats(fleet.simulator)
        reset_redis_stats(fleet.redis)
        before = {gateway.name: gateway_stats(gateway) for gateway in fleet.gateways}
        print(
            f"phase 3, run: {args.clients} clients x 1 poll of {len(ids)} ids every "
            f"{args.interval:g} s for {args.seconds:g} s ({polls_per_client} polls each, "
            f"{args.clients * polls_per_client} in all, {args.clients / args.interval:.0f} "
            f"queries/s intended), client i on gateway i mod {args.gateways}, running ttl "
            f"{ttl:g} s"
        )
        cpu_before = _cpu_now(fleet)
        polls = run(lambda: poll_all(fleet.gateways, ids, args, polls_per_client))
        cpu = _cpu_use(fleet, cpu_before, _cpu_now(fleet), polls.duration)
        stats = simulator_action_stats(fleet.simulator, ACTION)
        after = {gateway.name: gateway_stats(gateway) for gateway in fleet.gateways}
        redis_calls = redis_command_calls(fleet.redis)
        failover_lines, failovers = fleet.failovers()

    return report(
        args,
        fleet,
        ids,
        ttl,
        polls,
        stats,
        before,
        after,
        cpu,
        redis_calls,
        failover_lines,
        failovers,
    )


def plant_jobs(group: ServerGroup, simulator: Server, ids: list[str]) -> None:
    """Plant one running job per id, each a copy of one of the simulator's demo jobs in state
    Analysing (taken in turn) with its own JobId, input object and UserData: realistic fields,
    whatever the demo set holds today."""
    with httpx.Client(base_url=simulator.url, timeout=10.0, trust_env=False) as client:
        listing = client.get("/_simulator/jobs").json()["jobs"]
        templates = [
            client.get(f"/_simulator/jobs/{entry['id']}").json()["fields"]
            for entry in listing
            if entry.get("state") == "Analysing" and entry.get("quirk") is None
        ]
        if not templates:
            raise group.fail(simulator, "The simulator's demo set holds no job in Analysing.")
        for number, job_id in enumerate(ids):
            fields: dict[str, Any] = dict(templates[number % len(templates)])
            fields.pop("RequestId", None)  # the simulator then makes a fresh one per call
            fields["JobId"] = job_id
            fields["State"] = "Analysing"
            fields["Input"] = _numbered(str(fields.get("Input", "")), number)
            fields["UserData"] = json.dumps({"source": "bench.coalescing", "job": number})
            response = client.put(f"/_simulator/jobs/{job_id}", json=fields)
            if response.status_code != 200:
                raise group.fail(simulator, f"Planting {job_id} failed: {response.text}")


def _numbered(url: str, number: int) -> str:
    """`oss://bucket.host/dir/name.mp4` -> `oss://bucket.host/dir/name-07.mp4`: one input object
    per job, as real jobs have."""
    head, slash, name = url.rpartition("/")
    stem, dot, extension = name.rpartition(".")
    if not slash or not dot:
        return url
    return f"{head}/{stem}-{number:02d}.{extension}"


def gateway_stats(gateway: Server) -> dict[str, int]:
    """The fetcher's counters and those of kept answers (`kept_answer_...`)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        ready = client.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS).json()
    answers = ready.get("answers") or {}
    kept = {
        f"kept_answer_{name}": int(answers.get(name) or 0)
        for name in (
            "hits",
            "misses",
            "admitted",
            "expired",
            "outdated",
            "first_sightings",
            "joined",
        )
    }
    return {**fetcher_stats(gateway), **kept}


def check_through_gateways(
    group: ServerGroup, gateways: Sequence[Server], ids: list[str], query: str
) -> None:
    """One poll through each gateway before the run: all jobs found, running, no error. It also
    opens each gateway's upstream and Redis connections, so the run measures no start-up."""
    payload = {"query": QUERIES[query], "variables": {"ids": ids}}
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        for gateway in gateways:
            response = client.post(f"{gateway.url}/graphql", json=payload)
            problem = poll_problem(response.status_code, response.content, ids)
            if problem is not None:
                raise group.fail(gateway, f"The check poll failed: {problem[0]}: {problem[1]}")


async def poll_all(
    gateways: Sequence[Server], ids: list[str], args: argparse.Namespace, polls_per_client: int
) -> Polls:
    polls = Polls(intended=args.clients * polls_per_client)
    payload = json.dumps({"query": QUERIES[args.query], "variables": {"ids": ids}}).encode()
    requests = {g.name: post_request(HOST, g.port, "/graphql", payload) for g in gateways}
    targets = [gateways[index % len(gateways)] for index in range(args.clients)]
    # Every connection is open before t=0, so no poll pays for a TCP handshake.
    exchanges = await asyncio.gather(*(Exchange.open(HOST, t.port) for t in targets))
    first_tick = time.perf_counter() + 0.2
    last_answer = first_tick

    async def client(index: int, target: Server, exchange: Exchange) -> None:
        nonlocal last_answer
        request = requests[target.name]
        # Uniform stagger over the first interval: 200 clients, one every 2.5 ms.
        start = first_tick + index * args.interval / args.clients
        for number in range(polls_per_client):
            tick = start + number * args.interval
            now = time.perf_counter()
            if now < tick:
                await asyncio.sleep(tick - now)
            elif now - tick >= args.interval:
                polls.skipped += 1  # the previous poll ran past this whole tick
                continue
            sent_at = time.perf_counter()
            polls.sent += 1
            polls.lateness.append(max(0.0, sent_at - tick))
            try:
                status, body = await asyncio.wait_for(exchange.send(request), args.poll_timeout)
            except (TimeoutError, ConnectionError, ValueError) as exc:
                polls.errors[type(exc).__name__] += 1
                # The connection's state is unknown (an answer may still come): start afresh.
                exchange.close()
                exchange = await Exchange.open(HOST, target.port)
                continue
            answered_at = time.perf_counter()
            last_answer = max(last_answer, answered_at)
            problem = poll_problem(status, body, ids)
            if problem is not None:
                polls.errors[problem[0]] += 1
                continue
            polls.ok += 1
            polls.latencies.append(answered_at - sent_at)
            polls.max_age = max(polls.max_age, _oldest(body, time.time()))
        exchange.close()

    await asyncio.gather(
        *(
            client(index, target, exchange)
            for index, (target, exchange) in enumerate(zip(targets, exchanges, strict=True))
        )
    )
    polls.duration = last_answer - first_tick
    return polls


def poll_problem(status: int, body: bytes, ids: list[str]) -> tuple[str, str] | None:
    """What is wrong with one poll's answer, as (kind, detail), or None when it is right:
    HTTP 200, no error, one job per id in order, each with its id and state ANALYSING."""
    if status != 200:
        return f"HTTP {status}", body[:200].decode(errors="replace")
    try:
        answer = json.loads(body)
    except ValueError:
        return "invalid JSON", body[:200].decode(errors="replace")
    if answer.get("errors"):
        codes = {(e.get("extensions") or {}).get("code", "no code") for e in answer["errors"]}
        return f"GraphQL error {','.join(sorted(codes))}", str(answer["errors"][:1])
    jobs = (answer.get("data") or {}).get("jobs")
    if not isinstance(jobs, list) or len(jobs) != len(ids):
        return "wrong answer", "not one job per id"
    for job_id, job in zip(ids, jobs, strict=True):
        if not job or job.get("id") != job_id or job.get("state") != "ANALYSING":
            return "wrong answer", f"{job_id}: {job!r}"
    return None


def _oldest(body: bytes, now: float) -> float:
    """The age of the oldest snapshot in an answer: `ageSeconds`, or now - `fetchedAt`."""
    jobs = json.loads(body)["data"]["jobs"]
    if "ageSeconds" in jobs[0]:
        return max(float(job["ageSeconds"]) for job in jobs)
    return max(now - datetime.fromisoformat(job["fetchedAt"]).timestamp() for job in jobs)


def _cpu_now(fleet: Fleet) -> dict[str, float | None]:
    servers = [*fleet.gateways, fleet.simulator, fleet.redis]
    now = {server.name: cpu_seconds(server.process.pid) for server in servers}
    now["this load generator"] = time.process_time()
    machine = machine_cpu_seconds()
    now[MACHINE] = None if machine is None else machine[0]
    return now


def _cpu_use(
    fleet: Fleet, before: dict[str, float | None], after: dict[str, float | None], seconds: float
) -> CpuUse:
    cores: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        cores[name] = (
            None if start is None or end is None or seconds <= 0 else (end - start) / seconds
        )
    return CpuUse(cores)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def report(
    args: argparse.Namespace,
    fleet: Fleet,
    ids: list[str],
    ttl: float,
    polls: Polls,
    stats: dict[str, int],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    cpu: CpuUse,
    redis_calls: dict[str, int],
    failover_lines: list[str],
    failovers: int,
) -> int:
    calls, throttled, peak = stats["calls"], stats["throttled"], stats["peakWindow"]
    baseline = polls.sent * len(ids)
    reduction = baseline / calls if calls else math.inf
    errors = sum(polls.errors.values())
    kept = polls.sent / polls.intended if polls.intended else 0.0
    shared_bound = len(ids) * args.seconds / ttl
    ms = {q: 1000 * percentile(polls.latencies, q) for q in (0.5, 0.95, 0.99, 1.0)}
    late = {q: 1000 * percentile(polls.lateness, q) for q in (0.5, 0.99)}

    print("phase 4, readouts:")
    print(
        f"  polls: {polls.intended} intended, {polls.sent} sent ({100 * kept:.1f}%), "
        f"{polls.ok} answered right, {errors} errors{f' {dict(polls.errors)}' if errors else ''}"
        f", {polls.skipped} ticks skipped; {polls.sent / max(polls.duration, 1e-9):.0f} "
        f"queries/s over {polls.duration:.2f} s (intended {args.clients / args.interval:.0f})"
    )
    print(
        f"  poll latency: p50 {ms[0.5]:.1f} ms, p95 {ms[0.95]:.1f} ms, p99 {ms[0.99]:.1f} ms, "
        f"max {ms[1.0]:.1f} ms; sent after their tick by p50 {late[0.5]:.1f} ms, "
        f"p99 {late[0.99]:.1f} ms; oldest snapshot served {polls.max_age:.2f} s"
    )
    for name in after:
        delta = {key: after[name].get(key, 0) - before[name].get(key, 0) for key in after[name]}
        print(
            f"  {name} fetcher: {delta.get('cache_hits', '?')} cache hits, "
            f"{delta.get('cache_misses', '?')} misses, {delta.get('coalesced', '?')} coalesced "
            f"onto a fetch in flight, {delta.get('upstream_calls', '?')} upstream calls; "
            f"{delta.get('claim_waits', '?')} fetches waited for another process's call, "
            f"{delta.get('answered_elsewhere', '?')} answered by one; "
            f"{delta.get('kept_answer_hits', '?')} polls answered from kept answers ("
            f"{delta.get('kept_answer_misses', '?')} misses: "
            f"{delta.get('kept_answer_expired', '?')} expired, "
            f"{delta.get('kept_answer_outdated', '?')} outdated; "
            f"{delta.get('kept_answer_admitted', '?')} admitted); "
            f"{delta.get('kept_answer_joined', '?')} answered by an identical poll's execution "
            "under way"
        )
    # The shared cache's price: each Redis command is one round trip of some gateway.
    commands = sorted(redis_calls.items(), key=lambda item: -item[1])
    print(
        f"  redis commands during the run: {sum(redis_calls.values())} "
        f"({sum(redis_calls.values()) / max(polls.sent, 1):.1f} per poll sent): "
        + ", ".join(f"{name} {calls}" for name, calls in commands)
    )
    # A gateway whose Redis calls fail serves from its own memory and budget share for a
    # while: the processes then do not share the running snapshots, and the calls double.
    for line in failover_lines:
        print(f"  {line}")
    ours = sum(used or 0.0 for name, used in cpu.by_process.items() if name != MACHINE)
    machine = cpu.by_process.get(MACHINE)
    print(
        f"  cores used during the run: {ours:.2f} by the benchmark's processes ("
        + ", ".join(
            f"{name} {'n/a' if used is None else f'{used:.2f}'}"
            for name, used in cpu.by_process.items()
            if name != MACHINE
        )
        + f"); {'n/a' if machine is None else f'{machine:.2f}'} by the whole machine, which "
        f"has {os.cpu_count()} (the difference: other work on this shared machine)"
    )
    print(
        f"  simulator {ACTION}: {calls} calls, {throttled} throttled, peak {peak} in a rolling "
        f"second (limit {QPS})"
    )
    print(
        f"  what bounds the measured calls: the running ttl ({ttl:g} s): about {len(ids)} jobs x "
        f"{args.seconds:g} s / {ttl:g} s = {shared_bound:.0f} with one cache shared by the "
        f"fleet, about {args.gateways * shared_bound:.0f} if each of the {args.gateways} "
        "processes fetched the running snapshots for itself"
    )
    print(
        f"  baseline (no cache, no coalescing): {polls.sent} polls x {len(ids)} ids = "
        f"{baseline} calls; measured {calls}"
    )
    if kept < 0.95:
        busy = cpu.by_process.get(MACHINE)
        cores = os.cpu_count() or 1
        # Say which limit it was: busy cores (this machine, shared) or waiting in the servers.
        if busy is not None and busy < 0.9 * cores:
            why = (
                f"the machine was busy {busy:.2f} of {cores} cores, so not the CPU: the polls "
                "took longer than the interval (latency above), which each client waits for"
            )
        else:
            why = "the machine's cores were busy (see above; some of it other work)"
        print(
            f"  NOTE: only {100 * kept:.1f}% of the intended polls were sent: {args.clients} "
            f"clients x {1 / args.interval:g} polls/s was not kept up; {why}. The reduction is "
            "measured on the polls actually sent"
        )
    problems = [
        text
        for failed, text in (
            (errors > 0, f"{errors} polls failed: {dict(polls.errors)}"),
            (throttled > 0, f"{throttled} calls throttled by the simulator"),
            (peak > QPS, f"peak window {peak} over the limit {QPS}"),
            (polls.sent == 0, "no poll was sent"),
        )
        if failed
    ]
    verdict = "meets" if reduction >= GOAL else "MISSES"
    budget = "shared" if fleet.budget_shared else "local-share"
    print(
        f"reduction baseline / measured = {reduction:.1f}: {verdict} the goal of >= {GOAL:g} "
        f"(budget: {budget})"
    )
    if problems:
        print("FAILED: " + "; ".join(problems))
    print(
        f"RESULT {NAME} reduction={reduction:.1f} baseline_calls={baseline} upstream_calls={calls} "
        f"polls_sent={polls.sent} polls_intended={polls.intended} sent_pct={100 * kept:.1f} "
        f"p50_ms={ms[0.5]:.1f} "
        f"p95_ms={ms[0.95]:.1f} p99_ms={ms[0.99]:.1f} errors={errors} throttled={throttled} "
        f"peak_window={peak} budget={budget} failovers={failovers} "
        f"query={args.query} valid={'no' if problems else 'yes'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
