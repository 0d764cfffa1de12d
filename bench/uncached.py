"""Uncached ids through one gateway or a fleet: the ids, sending them all at t=0, the answers.

Shared by `bench.uncached_ids` (one gateway) and `bench.fleet_utilization` (several gateways
sharing one Redis): both send every id at once as concurrent `jobs(ids: [...])` queries and
time the last answer, so they must make, send and check them the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.processes import Server, ServerGroup
from bench.readouts import reset_simulator_stats

QUERY = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id state } }"


@dataclass(slots=True)
class Tally:
    """What the answers held, over all queries."""

    found: int = 0
    #: Ids answered null without an error: no such job (expected for the made-up ids).
    not_found: int = 0
    #: Ids with an error at their path (or in a query that failed as a whole).
    errors: int = 0
    #: Ids whose answer was not the expected one (a demo job missing, or another id).
    wrong: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    #: Queries answered with something other than HTTP 200 and a JSON body.
    http_failures: list[str] = field(default_factory=list)
    #: Seconds from t=0 to each query's answer.
    answered_at: list[float] = field(default_factory=list)
    #: Seconds from t=0 to the last answer of each gateway (by server name): shows whether
    #: the processes of a fleet finished together or one of them lagged.
    last_answer_by_gateway: dict[str, float] = field(default_factory=dict)


def make_ids(count: int, demo: list[str]) -> list[str]:
    """`count` distinct well-formed ids: the demo jobs first (they exist), then made-up ones
    (32 hex characters, unknown to the simulator: each still costs one upstream call)."""
    ids = list(dict.fromkeys(demo))[:count]
    taken = set(ids)
    number = 0
    while len(ids) < count:
        candidate = hashlib.sha256(f"bench-uncached-{number}".encode()).hexdigest()[:32]
        number += 1
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def warm_up(
    group: ServerGroup, gateways: Sequence[Server], simulator: Server, window: float
) -> float:
    """Two uncached ids through each gateway, one after the other: the first opens its upstream
    connection, the second tells the latency of one call on a warm path (the slowest gateway's
    is returned). The ids differ per gateway, so that a cache shared through Redis cannot answer
    one gateway's warm-up with another's. Then a pause until their budget slots are free again
    (`window` after the calls), and zeroed simulator stats."""
    latency = 0.0
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        for index, gateway in enumerate(gateways):
            for number in (1, 2):
                name = f"bench-uncached-warm-up-{index}-{number}".encode()
                warm_id = hashlib.sha256(name).hexdigest()[:32]
                started = time.perf_counter()
                response = client.post(
                    f"{gateway.url}/graphql",
                    json={"query": QUERY, "variables": {"ids": [warm_id]}},
                )
                elapsed = time.perf_counter() - started
                if response.status_code != 200 or "errors" in response.json():
                    raise group.fail(gateway, f"The warm-up query failed: {response.text}")
            latency = max(latency, elapsed)
        # The budget holds a slot for a window after its call completes.
        time.sleep(window + 0.2)
    reset_simulator_stats(simulator)
    return latency


async def send_all(
    gateways: Sequence[Server], queries: list[list[str]], known: set[str], http_timeout: float
) -> tuple[float, Tally]:
    """Send every query at once, query i to gateway i mod len(gateways) (round-robin, as a load
    balancer would), and wait for all answers: (seconds until the last one, what they held)."""
    tally = Tally()
    limits = httpx.Limits(max_connections=len(queries), max_keepalive_connections=len(queries))
    targets = [gateways[index % len(gateways)] for index in range(len(queries))]
    async with httpx.AsyncClient(timeout=http_timeout, limits=limits, trust_env=False) as client:
        # Open every connection first, so that t=0 is the moment all queries leave.
        await asyncio.gather(*(client.get(f"{target.url}/healthz") for target in targets))
        started = time.perf_counter()

        async def one(target: Server, ids: list[str]) -> None:
            try:
                response = await client.post(
                    f"{target.url}/graphql", json={"query": QUERY, "variables": {"ids": ids}}
                )
            except httpx.HTTPError as exc:
                tally.http_failures.append(f"{type(exc).__name__}: {exc}")
                tally.errors += len(ids)
                return
            answered = time.perf_counter() - started
            tally.answered_at.append(answered)
            tally.last_answer_by_gateway[target.name] = max(
                answered, tally.last_answer_by_gateway.get(target.name, 0.0)
            )
            check(response, ids, known, tally)

        await asyncio.gather(
            *(one(target, ids) for target, ids in zip(targets, queries, strict=True))
        )
        elapsed = time.perf_counter() - started
    return elapsed, tally


def check(response: httpx.Response, ids: list[str], known: set[str], tally: Tally) -> None:
    """Count each id of one query as found, not found, error or wrong."""
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        answer = {}
    jobs = (answer.get("data") or {}).get("jobs")
    if response.status_code != 200 or not isinstance(jobs, list) or len(jobs) != len(ids):
        tally.http_failures.append(f"HTTP {response.status_code}: {response.text[:300]}")
        tally.errors += len(ids)
        return
    failed: set[int] = set()
    for error in answer.get("errors") or ():
        path = error.get("path") or []
        code = (error.get("extensions") or {}).get("code", "no code")
        tally.error_codes[code] = tally.error_codes.get(code, 0) + 1
        if len(path) >= 2 and isinstance(path[1], int):
            failed.add(path[1])
        else:  # an error about the whole query fails every id of it
            failed.update(range(len(ids)))
    for index, (job_id, job) in enumerate(zip(ids, jobs, strict=True)):
        if index in failed:
            tally.errors += 1
        elif job is None:
            tally.not_found += 1
            tally.wrong += job_id in known
        else:
            tally.found += 1
            tally.wrong += job.get("id") != job_id or job_id not in known


def format_answers(tally: Tally, elapsed: float) -> list[str]:
    """The lines both benchmarks print about the answers."""
    answered = sorted(tally.answered_at)
    return [
        f"answers at (s): first {answered[0] if answered else 0:.2f}, "
        f"median {answered[len(answered) // 2] if answered else 0:.2f}, last {elapsed:.2f}",
        f"ids: {tally.found} found, {tally.not_found} not found (null), {tally.errors} with "
        f"errors{f' {tally.error_codes}' if tally.error_codes else ''}, {tally.wrong} wrong",
    ]


def invalidities(
    tally: Tally, *, calls: int, expected_calls: int, throttled: int, peak: int, limit: int
) -> list[str]:
    """What makes a run of uncached ids invalid (a run with any is not a measurement): failed
    queries, ids with errors or wrong answers, another number of upstream calls than ids,
    throttling, or a rolling second over the limit."""
    return [
        text
        for failed, text in (
            (bool(tally.http_failures), f"failed queries: {tally.http_failures[:3]}"),
            (tally.errors > 0, f"{tally.errors} ids with errors"),
            (tally.wrong > 0, f"{tally.wrong} wrong answers"),
            (calls != expected_calls, f"{calls} upstream calls instead of {expected_calls}"),
            (throttled > 0, f"{throttled} calls throttled by the simulator"),
            (peak > limit, f"peak window {peak} over the limit {limit}"),
        )
        if failed
    ]
