"""A gateway fleet for the benchmarks: a private Redis, a standalone simulator, N gateways.

Every process is a child of a `ServerGroup` (stopped when its block ends, on errors and Ctrl-C
too). The gateways share the Redis (budget and snapshot cache) and call the simulator over HTTP
with its public demo key pair, as `docker-compose.yml` runs them. `start_fleet` returns only once
every gateway says on `/readyz` that it reaches Redis, so a figure is never measured on a fleet
that silently fell back to per-process caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.processes import HOST, Server, ServerGroup
from bench.readouts import describe_budget, failover_switches, process_failovers, readiness
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET


@dataclass(frozen=True, slots=True)
class Fleet:
    redis: Server
    simulator: Server
    gateways: list[Server]
    #: Each gateway's `/readyz` right after start (same order as `gateways`).
    ready: list[dict[str, Any]]

    @property
    def budget_shared(self) -> bool:
        """Whether every gateway runs on the Redis budget (else on a local share or fallback)."""
        return all((ready.get("budget") or {}).get("shared") for ready in self.ready)

    def budget_limits(self) -> list[int]:
        """Each gateway's budget limit (calls per window) as its `/readyz` reported it."""
        return [int((ready.get("budget") or {}).get("limit", 0)) for ready in self.ready]

    def budget_window(self) -> float:
        """Seconds a completed call keeps its slot (1 s + the margin), as the gateways say."""
        return max(float((ready.get("budget") or {}).get("window", 1.0)) for ready in self.ready)

    def describe(self) -> list[str]:
        """Lines that say what was started, and which budget implementation is live."""
        lines = [
            f"redis {self.redis.url} (private, nothing saved), simulator {self.simulator.url}",
        ]
        lines += [
            f"{gateway.name} {gateway.url}: budget {describe_budget(ready)}; cache "
            f"{'shared through Redis' if (ready.get('cache') or {}).get('shared') else 'LOCAL'}"
            for gateway, ready in zip(self.gateways, self.ready, strict=True)
        ]
        return lines

    def failovers(self) -> tuple[list[str], int]:
        """Lines on each gateway's failovers since it started, from `/readyz` now, and their
        total (per gateway, the times it went local: `process_failovers`). A failover means
        Redis did not answer one process for a while (or its pool of connections ran out),
        which then served on its own cache and budget share, and fetched without fleet-wide
        claims: the fleet was not one fleet during that time."""
        lines, total = [], 0
        for gateway in self.gateways:
            ready = readiness(gateway)
            switches = failover_switches(ready)
            total += process_failovers(ready)
            errors = {
                str(part.get("lastError")) for part in switches.values() if part.get("lastError")
            }
            lines.append(
                f"{gateway.name}: status {ready.get('status')}, failovers to local: "
                + ", ".join(
                    f"{name} {part.get('failovers', 'n/a')}" for name, part in switches.items()
                )
                + (f" (last error: {'; '.join(sorted(errors))})" if errors else "")
            )
        return lines, total


def start_fleet(
    group: ServerGroup,
    *,
    replicas: int,
    upstream_qps: int,
    simulator_qps: int,
    gateway_env: Mapping[str, str] | None = None,
) -> Fleet:
    """Start Redis, the simulator and `replicas` gateways (`gateway-1`...), all on loopback.

    Each gateway gets `GATEWAY_MPS_ENDPOINT`, the demo key pair, `GATEWAY_REDIS_URL`,
    `GATEWAY_EXPECTED_REPLICAS=replicas` and `GATEWAY_UPSTREAM_QPS=upstream_qps` (the account's
    limit, for the whole fleet), plus `gateway_env`. Raises RuntimeError (a setup failure) if
    any process fails to start or a gateway does not reach Redis.
    """
    redis = group.start_redis()
    simulator = group.start(
        "simulator",
        ["-m", "gateway", "simulator", "--host", HOST, "--port", "{port}"],
        env={"SIMULATOR_QPS": str(simulator_qps)},
        ready_path="/_simulator/health",
    )
    env = {
        "GATEWAY_MPS_ENDPOINT": simulator.url,
        # The simulator's published demo key pair (public on purpose, not a secret).
        "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        # A private Redis without a password: the URL holds nothing secret here.
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_EXPECTED_REPLICAS": str(replicas),
        "GATEWAY_UPSTREAM_QPS": str(upstream_qps),
        **(gateway_env or {}),
    }
    gateways = [
        group.start(
            f"gateway-{number}",
            ["-m", "gateway", "serve", "--host", HOST, "--port", "{port}"],
            env=env,
            ready_path="/readyz",
        )
        for number in range(1, replicas + 1)
    ]
    ready = [readiness(gateway) for gateway in gateways]
    for gateway, answer in zip(gateways, ready, strict=True):
        reachable = (answer.get("redis") or {}).get("reachable")
        if answer.get("status") != "ready" or not reachable:
            raise group.fail(
                gateway,
                f"{gateway.name} does not reach the benchmark's Redis: /readyz says "
                f"status={answer.get('status')!r}, redis={answer.get('redis')!r}.",
            )
    return Fleet(redis, simulator, gateways, ready)
