"""Persisted queries: requests/s of a cached job asked by hash (POST, and GET) against the same
query sent as text, on one gateway, in one run.

    .venv/bin/python -m bench.persisted_queries [--connections 32] [--rounds 3] [--seconds 5]
                                                [--redis]

One gateway process (`python -m gateway serve` on its embedded simulator; with `--redis`, on a
private Redis as a fleet would run) answers the README's example query of a finished job, from
its cache. After the document is registered once, a closed-loop generator keeps
`--connections` keep-alive connections busy with one form of the request at a time: the text
(POST, the baseline), the hash alone (POST), and the hash alone over GET (what a CDN would
cache), alternating the order round by round. Every answer must be HTTP 200 with the same body
byte for byte; a run with any failure is invalid and exits 1. The ratios say what naming a
document by hash costs or saves against sending its text (no goal: it is reported).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import httpx

if not __package__:  # run as `python bench/persisted_queries.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cached_job import QUERY_TEMPLATE
from bench.loadgen import (
    LoadResult,
    add_closed_loop_options,
    closed_loop,
    get_request,
    post_request,
    run,
)
from bench.processes import HOST, ServerGroup, run_main, scrub_environment_and_say
from gateway.settings import SimulatorSettings
from gateway.simulator.demo import demo_job_ids

FORMS = ("text", "hash-post", "hash-get")
JSON = {"content-type": "application/json"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_closed_loop_options(parser, each="form")
    parser.add_argument("--redis", action="store_true", help="run the gateway on a private Redis")
    args = parser.parse_args(argv)
    return run_main("persisted_queries", lambda: run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    scrub_environment_and_say()
    job_id = demo_job_ids(SimulatorSettings())[0]
    query = QUERY_TEMPLATE % job_id
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    with ServerGroup() as group:
        env = {}
        if args.redis:
            redis = group.start_redis()
            env = {"GATEWAY_REDIS_URL": redis.url, "GATEWAY_REDIS_PREFIX": "bench-apq"}
        gateway = group.start(
            "gateway",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env=env,
            ready_path="/readyz",
        )
        bodies = {
            "text": json.dumps({"query": query}).encode(),
            "hash-post": json.dumps({"extensions": extensions}).encode(),
        }
        requests = {
            name: post_request(HOST, gateway.port, "/graphql", body)
            for name, body in bodies.items()
        }
        get_params = {"extensions": json.dumps(extensions)}
        requests["hash-get"] = get_request(HOST, gateway.port, "/graphql", get_params)
        with httpx.Client(base_url=gateway.url, timeout=10.0, trust_env=False) as client:
            # Registered, and the job cached: every answer after this is the same bytes.
            registering = {"query": query, "extensions": extensions}
            for _ in range(2):
                client.post("/graphql", json=registering).raise_for_status()
            expected = client.post("/graphql", content=bodies["text"], headers=JSON).content
            answers = {
                "hash-post": client.post(
                    "/graphql", content=bodies["hash-post"], headers=JSON
                ).content,
                "hash-get": client.get("/graphql?" + urlencode(get_params)).content,
            }
        if any(answer != expected for answer in answers.values()) or b'"SUCCESS"' not in expected:
            print(f"INVALID: the forms do not answer alike: {expected!r} {answers!r}")
            print("RESULT persisted_queries valid=no reason=answers")
            return 1
        print(
            f"persisted_queries: job {job_id}, {args.connections} connections, {args.rounds} "
            f"rounds of {args.seconds:g} s per form (+{args.warmup:g} s warm-up each), "
            f"{'a private Redis' if args.redis else 'no Redis'}"
        )
        results: dict[str, list[LoadResult]] = {form: [] for form in FORMS}
        for number in range(1, args.rounds + 1):
            shift = (number - 1) % len(FORMS)
            for form in FORMS[shift:] + FORMS[:shift]:
                load = run(
                    lambda form=form: closed_loop(  # type: ignore[misc]
                        HOST,
                        gateway.port,
                        requests[form],
                        expected,
                        connections=args.connections,
                        warmup=args.warmup,
                        duration=args.seconds,
                    )
                )
                results[form].append(load)
                print(
                    f"round {number}  {form:<9} {load.rps:8,.0f} req/s  p50 "
                    f"{load.latency_p50_ms:.1f} ms  p99 {load.latency_p99_ms:.1f} ms  "
                    f"failures {load.failed}"
                )
    median = {form: statistics.median(load.rps for load in results[form]) for form in FORMS}
    failures = sum(load.failed for loads in results.values() for load in loads)
    post_ratio = median["hash-post"] / median["text"] if median["text"] else 0.0
    get_ratio = median["hash-get"] / median["text"] if median["text"] else 0.0
    print(
        f"median: text {median['text']:,.0f} req/s, hash over POST {median['hash-post']:,.0f}, "
        f"hash over GET {median['hash-get']:,.0f}"
    )
    valid = failures == 0
    print(
        f"RESULT persisted_queries hash_post_ratio={post_ratio:.3f} "
        f"hash_get_ratio={get_ratio:.3f} text_rps={median['text']:.0f} "
        f"failures={failures} valid={'yes' if valid else 'no'}"
    )
    return 0 if valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
