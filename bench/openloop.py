"""An open-loop load generator: requests leave on a fixed schedule, whatever the answers do.

A closed loop (`loadgen.closed_loop`) sends again only when an answer arrives, so a server that
slows down gets less load; an overload needs the opposite: request n leaves at `start + n / rate`
even if every earlier one is still waiting. Each request goes on a keep-alive connection
(`loadgen.Exchange`, raw asyncio, a few microseconds per request) that is idle at its tick; when
none is, a new one is opened (counted, and its handshake is inside that request's time). A
connection idle for longer than `KEEP_ALIVE` is closed rather than reused (the server may be
closing it), so that no request is lost to a keep-alive timeout.

Answer times mean something only if the generator kept its schedule: `OpenLoopRun.lateness`
holds how long after its tick each request was written, and `check_generator` runs the same
schedule against `bench.trivial_server` (a server that does nothing) to show the generator's own
lateness and answer times on this machine.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.loadgen import Exchange, post_request, run
from bench.processes import HOST, ServerGroup

#: Seconds an idle connection is reused for: under uvicorn's keep-alive timeout (5 s), after
#: which the server closes it, possibly just as a request is written on it.
KEEP_ALIVE = 4.0


@dataclass(slots=True)
class Outcome:
    """One request of the schedule and what came back."""

    #: Its place in the schedule (0, 1, 2...).
    number: int
    #: Index of the port it went to.
    target: int
    #: When it was due, and when it was written (`time.perf_counter`; a connection opened for
    #: it is inside its time).
    tick: float
    sent: float
    #: When the last byte of its answer arrived (None: no answer, see `failure`).
    answered: float | None = None
    status: int = 0
    body: bytes = b""
    #: Why no answer came: `timeout`, `connection lost: ...`, `unreadable: ...`.
    failure: str | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from writing the request to the last byte of its answer."""
        return None if self.answered is None else self.answered - self.sent


@dataclass(frozen=True, slots=True)
class OpenLoopRun:
    """What one schedule gave."""

    rate: float
    #: Requests the schedule held, and those written (fewer only when interrupted).
    intended: int
    outcomes: list[Outcome]
    #: The first tick (`time.perf_counter`).
    started: float
    #: Connections opened during the run because none was idle at a tick.
    opened: int
    #: CPU seconds this process spent from the first tick to the last answer.
    cpu_seconds: float
    #: Seconds from the first tick to the last answer (or failure).
    elapsed: float = field(default=0.0)

    @property
    def lateness(self) -> list[float]:
        """Seconds each request was written after its tick."""
        return [max(0.0, outcome.sent - outcome.tick) for outcome in self.outcomes]

    def describe(self) -> str:
        """One line on how well the schedule was kept."""
        late = self.lateness
        return (
            f"{len(self.outcomes)} of {self.intended} requests sent at {self.rate:g}/s, late "
            f"after their tick by p50 {1000 * percentile(late, 0.5):.1f} ms, p99 "
            f"{1000 * percentile(late, 0.99):.1f} ms, max {1000 * max(late, default=0.0):.1f} "
            f"ms; {self.opened} connections opened during the run (none idle at a tick); "
            f"generator CPU {self.cpu_seconds / max(self.elapsed, 1e-9):.2f} cores"
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def open_loop(
    host: str,
    ports: Sequence[int],
    request_for: Callable[[int, int], bytes],
    *,
    rate: float,
    duration: float,
    answer_timeout: float,
    connections: int,
) -> OpenLoopRun:
    """Send `rate * duration` requests, request n at `start + n / rate` to `ports[n % len]`,
    its bytes `request_for(n, port)`; wait for every answer (at most `answer_timeout`
    each).

    `connections` keep-alive connections per port are opened before the first tick, so that
    no request pays for a handshake while the schedule's needs stay within them."""
    intended = math.floor(rate * duration)
    # Idle connections per port, each with when it was last used, the last used on the right.
    pools: list[deque[tuple[Exchange, float]]] = []
    for port in ports:
        opened = await asyncio.gather(*(Exchange.open(host, port) for _ in range(connections)))
        now = time.perf_counter()
        pools.append(deque((exchange, now) for exchange in opened))
    outcomes: list[Outcome] = []
    tasks: set[asyncio.Task[None]] = set()
    opened_during = 0

    async def one(outcome: Outcome, request: bytes) -> None:
        nonlocal opened_during
        # Written now: the task's wait for its first turn of the loop counts as lateness.
        outcome.sent = time.perf_counter()
        pool = pools[outcome.target]
        port = ports[outcome.target]
        exchange: Exchange | None = None
        while pool and exchange is None:
            exchange, used = pool.pop()
            if outcome.sent - used > KEEP_ALIVE:
                # The server may be closing it as idle right now: a request written then
                # would be lost without an answer. Never used again.
                exchange.close()
                exchange = None
        try:
            if exchange is None:
                opened_during += 1
                exchange = await Exchange.open(host, port)
        except OSError as exc:
            outcome.failure = f"connect: {exc}"
            return
        try:
            status, body = await asyncio.wait_for(exchange.send(request), answer_timeout)
        except TimeoutError:
            outcome.failure = "timeout"
        except ConnectionError as exc:
            outcome.failure = f"connection lost: {exc}"
        except ValueError as exc:
            outcome.failure = f"unreadable: {exc}"
        else:
            outcome.answered = time.perf_counter()
            outcome.status, outcome.body = status, body
            pool.append((exchange, outcome.answered))
            return
        # The connection's state is unknown (an answer may still come): never reused.
        exchange.close()

    cpu_before = time.process_time()
    started = time.perf_counter() + 0.05
    try:
        for number in range(intended):
            tick = started + number / rate
            delay = tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            target = number % len(ports)
            request = request_for(number, ports[target])
            outcome = Outcome(number, target, tick, sent=tick)
            outcomes.append(outcome)
            task = asyncio.ensure_future(one(outcome, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for pool in pools:
            for exchange, _ in pool:
                exchange.close()
    ended = max(
        (outcome.answered or outcome.sent for outcome in outcomes), default=time.perf_counter()
    )
    return OpenLoopRun(
        rate=rate,
        intended=intended,
        outcomes=outcomes,
        started=started,
        opened=opened_during,
        cpu_seconds=time.process_time() - cpu_before,
        elapsed=ended - started,
    )


def check_generator(
    group: ServerGroup, *, rate: float, seconds: float, connections: int, ports: int = 1
) -> OpenLoopRun:
    """Run the schedule's rate for `seconds` against `bench.trivial_server` (answers `{}` at
    once): the generator's own lateness and answer times here, printed, and returned."""
    trivial = group.start(
        "trivial", ["-m", "bench.trivial_server", "--port", "{port}"], ready_path="/"
    )
    try:
        request = post_request(HOST, trivial.port, "/graphql", b"{}")
        checked = run(
            lambda: open_loop(
                HOST,
                [trivial.port] * ports,
                lambda number, port: request,
                rate=rate,
                duration=seconds,
                answer_timeout=10.0,
                connections=connections,
            )
        )
    finally:
        group.stop(trivial)
    latencies = [outcome.latency for outcome in checked.outcomes if outcome.latency is not None]
    failed = sum(1 for outcome in checked.outcomes if outcome.status != 200)
    print(
        f"client check against bench.trivial_server: {checked.describe()}; answers p50 "
        f"{1000 * percentile(latencies, 0.5):.1f} ms, p99 {1000 * percentile(latencies, 0.99):.1f}"
        f" ms; {failed} failed"
    )
    if failed:
        raise RuntimeError(f"The open-loop generator failed {failed} requests to a trivial server.")
    return checked
