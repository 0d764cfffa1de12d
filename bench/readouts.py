"""What the servers say about themselves: the gateway's fetcher counters, the simulator's meter."""

from __future__ import annotations

import re

import httpx

from bench.processes import Server


def fetcher_stats(gateway: Server) -> dict[str, int]:
    """The fetcher counters of `GET /readyz`, with snake_case names (`upstream_calls`) whether
    the gateway writes them so or in camelCase (`upstreamCalls`)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        fetcher: dict[str, int] = client.get(f"{gateway.url}/readyz").json()["fetcher"]
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): value for name, value in fetcher.items()}


def simulator_action_stats(simulator: Server, action: str) -> dict[str, int]:
    """`calls`, `throttled` and `peakWindow` of one action, from `GET /_simulator/stats`."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        stats: dict[str, int] = client.get(f"{simulator.url}/_simulator/stats").json()["actions"][
            action
        ]
    return stats
