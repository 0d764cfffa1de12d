"""What the servers say about themselves: the gateway's fetcher counters, the simulator's meter,
Redis's command counters and the commands it receives."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis

from bench.processes import ADMIN_HEADERS, HOST, Server


def fetcher_stats(gateway: Server) -> dict[str, int]:
    """The fetcher counters of `GET /readyz`, with snake_case names (`upstream_calls`) whether
    the gateway writes them so or in camelCase (`upstreamCalls`)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        fetcher: dict[str, int] = client.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS).json()[
            "fetcher"
        ]
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): value for name, value in fetcher.items()}


def kept_answer_hits(gateway: Server) -> int | None:
    """The gateway's hits of kept answers (`/readyz`'s `answers.hits`; None when it has none)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        answers = (
            client.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS).json().get("answers") or {}
        )
    hits = answers.get("hits")
    return hits if isinstance(hits, int) else None


def simulator_action_stats(simulator: Server, action: str) -> dict[str, int]:
    """`calls`, `throttled` and `peakWindow` of one action, from `GET /_simulator/stats`."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        stats: dict[str, int] = client.get(f"{simulator.url}/_simulator/stats").json()["actions"][
            action
        ]
    return stats


def simulator_arrivals_per_second(simulator: Server, action: str) -> list[int]:
    """Calls of one action arriving in each whole second since its first call after the last
    reset (`GET /_simulator/stats`'s `arrivalsPerSecond`; the simulator keeps the last hour)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        counts: list[int] = client.get(f"{simulator.url}/_simulator/stats").json()[
            "arrivalsPerSecond"
        ][action]["counts"]
    return counts


def readiness(gateway: Server) -> dict[str, Any]:
    """The whole `GET /readyz` answer (status, redis, budget, cache, fetcher), as sent."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        answer: dict[str, Any] = client.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS).json()
    return answer


def failover_switches(ready: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Redis failover switches of a gateway's `/readyz`, by name, each with `degraded`,
    `failovers` and `lastError`: one for the whole process (`redis.failover`, since the budget
    moved to `gateway/budget/`), or one per part (`budget`, `cache`, `claims`) in gateways
    from before, where each part failed over on its own."""
    shared = (ready.get("redis") or {}).get("failover")
    if isinstance(shared, dict):
        return {"redis": shared}
    parts = ("budget", "cache", "claims")
    return {name: (ready.get(name) or {}).get("failover") or {} for name in parts}


def process_failovers(ready: dict[str, Any]) -> int:
    """How many times a gateway went to its local budget and cache since it started: its one
    switch's count, or the largest of its parts' (each part of an older gateway counts the
    same outage once)."""
    return max(
        (int(part.get("failovers", 0)) for part in failover_switches(ready).values()), default=0
    )


def describe_budget(ready: dict[str, Any]) -> str:
    """Which budget a gateway runs on, from its `/readyz`: the Redis budget shared by the fleet
    (`budget.shared`), or a local one (its limit tells whether it is the process's share of the
    account's limit, `GATEWAY_UPSTREAM_QPS // GATEWAY_EXPECTED_REPLICAS`, until the Redis budget
    is wired, or while Redis is unreachable)."""
    budget = ready.get("budget") or {}
    where = "shared through Redis" if budget.get("shared") else "local to the process"
    return f"{where}, limit {budget.get('limit', '?')} calls per {budget.get('window', '?')} s"


def reset_simulator_stats(simulator: Server) -> None:
    """Zero the simulator's counters (calls, throttled, peakWindow) just before a measurement."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        client.post(f"{simulator.url}/_simulator/stats/reset").raise_for_status()


def reset_redis_stats(redis_server: Server) -> None:
    """Zero Redis's command counters (`CONFIG RESETSTAT`) just before a measurement."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.config_resetstat()


def redis_command_calls(redis_server: Server) -> dict[str, int]:
    """Calls per command since the last reset (`INFO commandstats`: `{"get": 1234, ...}`): how
    many round trips the gateways made to the shared Redis, and of which kind."""
    with redis.Redis.from_url(redis_server.url) as client:
        stats: dict[str, dict[str, Any]] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values.get("calls", 0)) for name, values in stats.items()
    }


#: One line of MONITOR: `1700000000.123456 [0 127.0.0.1:5555] "evalsha" "..."`, or `[0 lua]`
#: for a command a script ran.
_MONITORED = re.compile(r'^\d+\.\d+ \[\d+ (\S+)\] "([^"]+)"')


class RedisMonitor:
    """The commands a Redis receives while the `with` block runs, from `redis-cli MONITOR` in
    a child process (it takes nothing from this process's interpreter).

    Unlike `INFO commandstats`, which counts a command run by a Lua script like one a client
    sent, MONITOR tells them apart: `round_trips` counts the commands clients sent (a script
    call is one round trip), `scripted` those the scripts ran. MONITOR costs Redis a little
    per command; at a few thousand commands a second that is far from its limits.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._folder = Path(tempfile.mkdtemp(prefix="mps-bench-monitor-"))
        self._path = self._folder / "monitor.txt"
        self._process: subprocess.Popen[bytes] | None = None
        self.round_trips: Counter[str] = Counter()
        self.scripted: Counter[str] = Counter()
        #: Script calls (EVALSHA) by script: its SHA1's first 8 digits, then the commands it
        #: was seen to run, in the order first seen (so a reader can tell which script it is).
        self.scripts: Counter[str] = Counter()

    def __enter__(self) -> RedisMonitor:
        executable = shutil.which("redis-cli")
        if executable is None:
            raise RuntimeError("redis-cli is not on PATH (Debian/Ubuntu: apt-get install redis).")
        with self._path.open("wb") as output:
            self._process = subprocess.Popen(
                [executable, "-h", HOST, "-p", str(self._server.port), "monitor"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # MONITOR answers OK once it is on: nothing before that would be seen.
        deadline = time.monotonic() + 5.0
        while not self._path.read_bytes().startswith(b"OK"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"redis-cli MONITOR did not start: {self._path.read_text()}")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
        calls: Counter[str] = Counter()
        runs: dict[str, dict[str, None]] = {}
        script: str | None = None
        with self._path.open(errors="replace") as lines:
            for line in lines:
                match = _MONITORED.match(line)
                if match is None:
                    continue
                where, command = match.groups()
                command = command.lower()
                if where == "lua":
                    self.scripted[command] += 1
                    # A script runs atomically: its commands follow its EVALSHA line.
                    if script is not None:
                        runs[script][command] = None
                    continue
                self.round_trips[command] += 1
                script = None
                if command == "evalsha":
                    script = line[match.end() :].split('"')[1][:8]
                    calls[script] += 1
                    runs.setdefault(script, {})
        for sha, count in calls.items():
            self.scripts[f"{sha} ({' '.join(runs[sha])})"] = count
        self._path.unlink()
        self._folder.rmdir()

    def _stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
