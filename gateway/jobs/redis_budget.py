"""`RedisBudget`: one upstream call budget for every gateway process, kept in Redis.

Same semantics as `LocalBudget` (see `gateway.jobs.budget`), fleet-wide: at most the effective
limit of slots are held by all processes together, a slot being held from its grant until
`window` seconds after its call COMPLETED (the completion-time rule), and the effective limit
is lowered by throttles and recovers (AIMD, `gateway.jobs.adaptive`) for the whole fleet at once.

**State in Redis** (keys `{prefix}:budget:{{{operation}}}:*`; the braces make one Redis Cluster
hash slot of them, as a script needs):
- `...:inflight`, a sorted set: one member per granted, uncompleted call; score = its lease
  expiry (grant + `lease`, server time in microseconds). A process that dies mid-call holds its
  slots until their leases expire, not forever. `lease` must exceed the longest a call can take
  (connect + read timeout), or a slow call's slot frees while it may still arrive upstream.
- `...:recent`, a sorted set: one member per completed call whose slot is still held; score =
  completion + `window`.
- `...:aimd`, a hash: `base` and `ceiling` (the effective limit and the ceiling right after the
  last decrease) and `at` (its server time, µs). The scripts compute `AimdRule`'s formula:
  with x = (now - at) / T (T = the ceiling recovery time), ceiling(now) = min(limit, ceiling +
  limit / 2 * x^3) and effective = min(ceiling(now), base + recovery * (now - at)); no hash,
  the full limit (a hash without `ceiling`, written by an older version: no ceiling).
Every key carries a TTL that outlives what it holds, so an abandoned prefix cleans itself.

**Scripts** (atomic; `TIME` inside, so only Redis's clock matters). Common arguments: KEYS =
[inflight, recent, aimd]; ARGV[1] limit, ARGV[2] window (µs), ARGV[3] recovery (calls per µs),
ARGV[4] TTL of the slot sets (ms), ARGV[5] ceiling recovery time T (µs). Each script first
drops expired slots, then:
- ACQUIRE (ARGV[6] want, ARGV[7] lease µs, ARGV[8] member prefix, ARGV[9] first sequence):
  grants n = min(want, floor(effective) - held) slots (at least 0), members
  `{prefix}:{first + i}`, and answers n;
- RELEASE (ARGV[6] "1" if the call was made, "0" if the slot goes back unused, ARGV[7..]
  members): removes the members from inflight; a made call's slot goes to recent until now +
  window; answers how many members were still in flight (0: the lease expired first);
- THROTTLE (ARGV[6] decrease factor, ARGV[7] holdoff µs, ARGV[8] ceiling factor): unless the
  last decrease is less than holdoff old (the same burst), sets base = max(1, effective *
  min(decrease factor, ceiling factor)), ceiling = max(1, effective * ceiling factor), at =
  now; answers 1 if it decreased, else 0.
Every answer is the same flat list of integers: [n, base in thousandths (-1: none), ceiling in
thousandths (-1: none), µs since the decrease (-1: none), r, r offsets (µs) of the recent
slots' expiries, ascending, then the offsets of the in-flight slots' lease expiries,
ascending]: the process's *view* of the fleet.

**In this process.** Waiters queue in a `FairQueue` (round-robin across keys) behind a local
`max_in_flight`, as in `LocalBudget`. One pump task asks Redis for slots for as many waiters
as may go (up to `_BATCH` per round trip) and hands them out round-robin as they come; when
Redis says "full", it sleeps until the view says a slot may free (the earliest expiry that
matters, an in-flight call taken as completing when the view was taken, or the next step of
the effective limit), at most one window, at least a millisecond: no busy loop, and in steady
state one to three round trips per grant. A waiter never sleeps past its deadline (it has its
own timer) and a waiter cancelled before it used its slot passes the slot to the next waiter,
or gives it back to Redis unused. Completed calls are released in batches (one RELEASE at a
time per process, carrying every completion since the last), so a grant costs less than one
release round trip under load.

**Fairness across processes**: each process asks at its own pace, so slots go to whichever
waiting process asks first after one frees. Every waiting process asks again at each expiry
that concerns it, so none starves, and over time waiting processes get about equal shares;
the fair order between requests holds within each process, not across processes.

**Fail fast**: the lower bound of `LocalBudget`, computed on the latest view (other processes
can only add load since, so it stays a lower bound) and on what this process knows of its own
slots (its calls in flight free no earlier than now + window), taking the later of the two.

**Redis errors**: a Redis that does not answer (refused, dropped, timed out: give the client
socket timeouts, as `gateway.jobs.backend.open_redis` does) raises `BudgetBackendError`, a
`BackendUnavailable`, at once: from `slot()` entry (every waiter queued then gets it), from
slot exit (the call is done; its slot then frees when its lease expires) and from
`throttled()`. Other Redis errors are bugs and propagate as they are.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import redis.asyncio
from redis.commands.core import AsyncScript

from gateway import errors
from gateway.jobs.adaptive import (
    DEFAULT_CEILING_FACTOR,
    DEFAULT_CEILING_RECOVERY_TIME,
    DEFAULT_DECREASE_FACTOR,
    DEFAULT_RECOVERY_RATE,
    AimdRule,
    Decrease,
)
from gateway.jobs.backend import REDIS_UNAVAILABLE, BackendUnavailable, redis_unavailable
from gateway.jobs.budget import BudgetStatus, CallLater, TimerHandle, earliest_grant, schedule
from gateway.jobs.fair_queue import FairQueue, Ticket
from gateway.settings import GatewaySettings

__all__ = ["QUERY_JOB", "BudgetBackendError", "RedisBudget"]

logger = logging.getLogger(__name__)

#: The operation the gateway budgets.
QUERY_JOB: Final = "QueryIProductionJob"

#: Most slots asked for in one round trip.
_BATCH: Final = 32
#: Shortest sleep of the pump between two "full" answers: never a busy loop.
_MIN_NAP: Final = 0.001
#: Added to every key's TTL, beyond what its content needs.
_TTL_SLACK_MS: Final = 1_000

_PREAMBLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local recovery = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local ceiling_time = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local state = redis.call('HMGET', KEYS[3], 'base', 'at', 'ceiling')
local base, at = tonumber(state[1]), tonumber(state[2])
-- A hash written by a version without ceilings has none: the limit is the ceiling.
local cap = tonumber(state[3]) or limit
local effective = limit
if base and at then
  -- AimdRule.effective: the climb, capped by the ceiling's cubic creep, capped by the limit.
  local dt = math.max(0, now - at)
  local x = dt / ceiling_time
  local ceiling = math.min(limit, cap + limit * 0.5 * x * x * x)
  effective = math.min(ceiling, base + recovery * dt)
end
local function us(x)
  return string.format('%.0f', x)
end
local function view(n)
  local out = {n, -1, -1, -1, 0}
  if base and at then
    out[2] = math.floor(base * 1000)
    out[3] = math.floor(cap * 1000)
    out[4] = now - at
  end
  local recent = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  out[5] = #recent / 2
  for i = 2, #recent, 2 do
    out[#out + 1] = tonumber(recent[i]) - now
  end
  local leases = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 2, #leases, 2 do
    out[#out + 1] = tonumber(leases[i]) - now
  end
  return out
end
"""

ACQUIRE: Final = (
    _PREAMBLE
    + """
local want = tonumber(ARGV[6])
local lease = tonumber(ARGV[7])
local held = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local allowed = math.max(1, math.floor(effective + 1e-9))
local n = math.max(0, math.min(want, allowed - held))
local first = tonumber(ARGV[9])
for i = 0, n - 1 do
  redis.call('ZADD', KEYS[1], us(now + lease), ARGV[8] .. ':' .. us(first + i))
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return view(n)
"""
)

RELEASE: Final = (
    _PREAMBLE
    + """
local used = ARGV[6] == '1'
local found = 0
for i = 7, #ARGV do
  found = found + redis.call('ZREM', KEYS[1], ARGV[i])
  if used then
    redis.call('ZADD', KEYS[2], us(now + window), ARGV[i])
  end
end
if used then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return view(found)
"""
)

THROTTLE: Final = (
    _PREAMBLE
    + """
local factor = tonumber(ARGV[6])
local holdoff = tonumber(ARGV[7])
local cfactor = tonumber(ARGV[8])
if at and now - at < holdoff then
  return view(0)
end
-- AimdRule.decreased.
base = math.max(1, effective * math.min(factor, cfactor))
cap = math.max(1, effective * cfactor)
at = now
redis.call('HSET', KEYS[3], 'base', string.format('%.6f', base),
  'ceiling', string.format('%.6f', cap), 'at', us(now))
-- The state outlives both recoveries (AimdRule.recovered_in): the climb back to the limit
-- and the ceiling's creep. Expiring earlier would forget the ceiling; later is harmless.
local recovered = math.max(
  (limit - base) / recovery, ceiling_time * (2 * (limit - cap) / limit) ^ (1 / 3))
redis.call('PEXPIRE', KEYS[3], math.ceil((recovered + holdoff) / 1000) + 1000)
return view(1)
"""
)


class BudgetBackendError(BackendUnavailable):
    """Redis did not answer the budget (refused, dropped, timed out...): no slot was granted,
    released or throttled there. `gateway.jobs.failover.FailoverBudget` catches it (as a
    `BackendUnavailable`) and serves from a local budget."""

    def __init__(self, reason: str) -> None:
        super().__init__("redis", reason)


@dataclass(frozen=True, slots=True)
class _View:
    """The fleet's slots as one script answer described them, on this process's clock."""

    #: The script's n (slots granted, members found, 1 if it decreased the limit).
    count: int
    #: When the script was called (before its answer: the offsets are from a later instant,
    #: so every time below is early, never late, and estimates stay lower bounds).
    taken_at: float
    #: The AIMD state: the effective limit and the ceiling after the last decrease, None if none.
    decrease: Decrease | None
    #: Seconds from that decrease to `taken_at`.
    since: float
    #: Expiries of completed calls' slots, ascending.
    recent: tuple[float, ...]
    #: The earliest each held slot can free, ascending: a recent one at its expiry, an
    #: in-flight one at its lease expiry or, if sooner, `window` after `taken_at` (had it
    #: completed then).
    frees: tuple[float, ...]


class _Batch:
    """Completed calls' slots to release together."""

    __slots__ = ("done", "members")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.members: list[str] = []
        #: Resolved when the batch is released, or with the failure.
        self.done = done


class _Waiter:
    __slots__ = ("deadline", "future", "ticket", "timer")

    def __init__(self, future: asyncio.Future[str | Exception], deadline: float) -> None:
        #: Resolved with the slot's member when granted, with the error otherwise.
        self.future = future
        self.deadline = deadline
        self.ticket: Ticket[_Waiter] | None = None
        self.timer: TimerHandle | None = None


class RedisBudget:
    """A `Budget` shared by every process that uses the same Redis, `prefix` and `operation`.

    Every process of the fleet must use the same `limit`, `window`, `lease` and AIMD
    parameters; `max_in_flight` is per process. `clock` and `call_later` are this process's
    (deadlines are on `clock`); Redis's own clock times the slots. `redis` must have socket
    timeouts (see the module docstring); the budget never closes it.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        operation: str,
        limit: int,
        window: float,
        max_in_flight: int,
        lease: float,
        decrease_factor: float = DEFAULT_DECREASE_FACTOR,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_factor: float = DEFAULT_CEILING_FACTOR,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
        prefix: str = "mpsgw",
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError(f"Expected a window of more than 0 seconds, received {window}.")
        if max_in_flight < 1:
            raise ValueError(
                f"Expected max_in_flight of at least 1 call, received {max_in_flight}."
            )
        if lease < window:
            raise ValueError(
                f"Expected a lease of at least the window ({window} s), received {lease} s."
            )
        self._rule = AimdRule(
            limit,
            decrease_factor=decrease_factor,
            recovery_rate=recovery_rate,
            holdoff=window,
            ceiling_factor=ceiling_factor,
            ceiling_recovery_time=ceiling_recovery_time,
        )
        self._limit = limit
        self._window = window
        self._max_in_flight = max_in_flight
        self._lease = lease
        self._operation = operation
        self._clock = clock
        self._call_later = call_later
        base = f"{prefix}:budget:{{{operation}}}"
        self._keys = [f"{base}:inflight", f"{base}:recent", f"{base}:aimd"]
        self._common: list[str | int | float] = [
            limit,
            _us(window),
            repr(self._rule.recovery_per_second / 1e6),
            math.ceil(max(lease, window) * 1000) + _TTL_SLACK_MS,
            _us(self._rule.ceiling_recovery_time),
        ]
        self._acquire_script = redis.register_script(ACQUIRE)
        self._release_script = redis.register_script(RELEASE)
        self._throttle_script = redis.register_script(THROTTLE)
        # Members are `{token}:{sequence}`: unique across processes and restarts.
        self._token = uuid.uuid4().hex
        self._sequence = 0
        self._queue: FairQueue[_Waiter] = FairQueue()
        # Calls of this process granted and not completed; slots being asked for.
        self._in_flight = 0
        self._asking = 0
        # Expiries of this process's completed calls (completion + window, local clock).
        self._own_expiries: deque[float] = deque()
        self._view: _View | None = None
        self._round_trips = 0
        self._pump_task: asyncio.Task[None] | None = None
        self._nap: asyncio.Future[None] | None = None
        # Give-backs run in the background; the loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        # Completions waiting for the next RELEASE, and the task that sends them.
        self._batch: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, redis: redis.asyncio.Redis, settings: GatewaySettings) -> RedisBudget:
        """The QueryIProductionJob budget of the fleet: `upstream_qps` calls per (1 s +
        margin), `upstream_concurrency` in flight per process, leases that outlast a call
        (connect + read timeout) by a window and a second."""
        window = settings.upstream_window
        return cls(
            redis,
            operation=QUERY_JOB,
            limit=settings.upstream_qps,
            window=window,
            max_in_flight=settings.upstream_concurrency,
            lease=settings.connect_timeout + settings.read_timeout + window + 1.0,
            prefix=settings.redis_prefix,
        )

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def keys(self) -> tuple[str, str, str]:
        """The Redis keys: in-flight slots, recent slots, AIMD state."""
        return (self._keys[0], self._keys[1], self._keys[2])

    @property
    def round_trips(self) -> int:
        """Script calls sent to Redis and not answered yet."""
        return self._round_trips

    def slot(
        self, deadline: float, *, key: Hashable | None = None
    ) -> AbstractAsyncContextManager[None]:
        return _Slot(self, deadline, key)

    async def throttled(self) -> None:
        view = self._view
        # The view's decrease is at most this old (Redis answered after `taken_at`): if that
        # is within the holdoff, so is Redis's, and the script would change nothing. Every
        # call of a throttled burst reports it; this spares their round trips.
        if (
            view is not None
            and view.decrease is not None
            and view.since + self._clock() - view.taken_at < self._rule.holdoff
        ):
            return
        rule = self._rule
        view = await self._call(
            self._throttle_script,
            repr(rule.decrease_factor),
            _us(rule.holdoff),
            repr(rule.ceiling_factor),
        )
        if view.count:
            logger.warning(
                "The upstream throttled although the budget held: the fleet's %s budget is "
                "%d calls per %.3f s for now (of %d), recovering by %.1f per second up to a "
                "ceiling of %.1f, which creeps back to %d over minutes",
                self._operation,
                rule.grants(rule.effective(view.decrease, view.since)),
                self._window,
                self._limit,
                rule.recovery_per_second,
                rule.ceiling(view.decrease, view.since),
                self._limit,
            )

    def snapshot(self) -> BudgetStatus:
        """This process's waiters and calls in flight; the fleet's effective limit and recent
        slots as last seen (they are exact only just after a script answered)."""
        now = self._clock()
        view = self._view
        recent = 0
        if view is not None:
            recent = len(view.recent) - bisect.bisect_right(view.recent, now)
        return BudgetStatus(
            limit=self._limit,
            effective_limit=self._grants_at(now),
            window=self._window,
            in_flight=self._in_flight,
            recent=recent,
            waiting=len(self._queue),
            next_free_in=self._estimate(self._queue.keys, now, now) - now,
            ceiling=self._rule.grants(self._ceiling_at(now)),
        )

    async def aclose(self) -> None:
        """Stop the pump (waiters still queued get `BudgetExhausted`) and let the releases
        under way end (each within the client's timeout). The client stays open."""
        for waiter in self._drain_queue():
            waiter.future.set_result(errors.BudgetExhausted(retry_after=0.0))
        tasks = [task for task in (self._pump_task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        if self._flusher is not None:
            tasks.append(self._flusher)
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- acquiring --------------------------------------------------------------------------

    async def _acquire_slot(self, deadline: float, key: Hashable | None) -> str:
        """A slot's member, once granted."""
        now = self._clock()
        if now > deadline:
            raise errors.BudgetExhausted(retry_after=0.0)
        eta = self._estimate(self._queue.position(key), now, deadline)
        if eta > deadline:
            raise errors.BudgetExhausted(retry_after=eta - now)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), deadline)
        waiter.ticket = self._queue.push(key, waiter)
        waiter.timer = self._schedule(deadline - now, lambda: self._expire(waiter))
        self._start_pump()
        try:
            outcome = await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled():
                granted = future.result()
                if isinstance(granted, str):
                    # Granted, but cancelled before it could use the slot: no call was made.
                    self._pass_on([granted])
            else:
                self._leave(waiter)
            raise
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _start_pump(self) -> None:
        if self._pump_task is None and self._queue and self._room() > 0:
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name=f"{self._operation} budget pump"
            )

    async def _pump(self) -> None:
        """Ask Redis for slots while waiters may go; sleep while Redis is full."""
        try:
            while True:
                want = min(len(self._queue), self._room(), _BATCH)
                if want <= 0:
                    return
                first = self._sequence
                self._sequence += want
                # Counted against max_in_flight while asked for.
                self._asking = want
                try:
                    view = await self._call(
                        self._acquire_script, want, _us(self._lease), self._token, first
                    )
                finally:
                    self._asking = 0
                self._in_flight += view.count
                self._pass_on([f"{self._token}:{first + i}" for i in range(view.count)])
                if view.count < want:
                    await self._sleep(self._retry_in(view))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, BudgetBackendError):
                logger.exception("The %s budget pump failed", self._operation)
            # Nobody may hang on a budget that cannot ask: every waiter gets the error, each
            # its own instance (one raised in many tasks would collect all their tracebacks).
            for waiter in self._drain_queue():
                waiter.future.set_result(_copy(exc))
        finally:
            self._pump_task = None

    def _room(self) -> int:
        """Slots this process may still ask for under max_in_flight."""
        return self._max_in_flight - self._in_flight - self._asking

    def _retry_in(self, view: _View) -> float:
        """Seconds until a grant may be possible by `view`: at least a millisecond (no busy
        loop), at most a window (a view is not trusted for longer)."""
        now = self._clock()
        since = view.since + (now - view.taken_at)
        step = self._rule.next_step_in(view.decrease, since)
        eta = self._estimate(0, now, now) - now
        return max(_MIN_NAP, min(eta, step, self._window))

    async def _sleep(self, delay: float) -> None:
        self._nap = nap = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not nap.done():
                nap.set_result(None)

        timer = self._schedule(delay, wake)
        try:
            await nap
        finally:
            timer.cancel()
            self._nap = None

    def _wake_pump(self) -> None:
        if self._nap is not None and not self._nap.done():
            self._nap.set_result(None)

    def _pass_on(self, members: Sequence[str]) -> None:
        """Hand granted slots to waiters, round-robin; give back the ones nobody takes."""
        for index, member in enumerate(members):
            waiter = self._next_waiter()
            if waiter is None:
                self._give_back(members[index:])
                return
            waiter.future.set_result(member)

    def _next_waiter(self) -> _Waiter | None:
        while (waiter := self._queue.pop()) is not None:
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.future.done():
                return waiter
            # Its task was cancelled and has not run its handler yet: it leaves.
        return None

    def _give_back(self, members: Sequence[str]) -> None:
        """Slots granted and not used: out of Redis at once, in the background (if that
        fails, their leases free them)."""
        self._in_flight -= len(members)
        task = asyncio.get_running_loop().create_task(self._release(members, used=False))
        self._tasks.add(task)
        task.add_done_callback(self._given_back)

    def _given_back(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning(
                "Giving back unused budget slots failed (their leases free them): %s", exc
            )
        self._start_pump()

    def _expire(self, waiter: _Waiter) -> None:
        """A waiter's deadline passed before it was granted."""
        assert waiter.ticket is not None
        if not self._queue.discard(waiter.ticket):
            return
        if not self._queue:
            self._wake_pump()  # nothing to wait for: let it end now
        if waiter.future.done():
            return  # cancelled at the same moment: it will see its cancellation, not this
        now = self._clock()
        # The hint for a retry: when a newcomer (a new request, a key of its own) could go.
        retry_after = self._estimate(self._queue.keys, now, now) - now
        waiter.future.set_result(errors.BudgetExhausted(retry_after=retry_after))

    def _leave(self, waiter: _Waiter) -> None:
        assert waiter.ticket is not None
        self._queue.discard(waiter.ticket)
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not self._queue:
            self._wake_pump()

    def _drain_queue(self) -> list[_Waiter]:
        waiters = []
        while (waiter := self._next_waiter()) is not None:
            waiters.append(waiter)
        return waiters

    # --- releasing --------------------------------------------------------------------------

    async def _complete(self, member: str) -> None:
        """The call made in `member`'s slot completed: its slot is held `window` more.

        Completions are released in batches, one RELEASE at a time per process: those that
        end while one is under way go together in the next. A slot is then held from a little
        later than its call ended (the safe side), and a burst of completions costs one round
        trip and one connection instead of one each. Returns when the batch is done, raising
        its failure; a caller cancelled meanwhile does not stop the batch.
        """
        self._in_flight -= 1
        self._own_expiries.append(self._clock() + self._window)
        self._start_pump()  # a waiter held back by max_in_flight may go
        if self._batch is None:
            self._batch = _Batch(asyncio.get_running_loop().create_future())
        batch = self._batch
        batch.members.append(member)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        try:
            await asyncio.shield(batch.done)
        except BudgetBackendError as exc:
            raise _copy(exc) from exc.__cause__

    async def _flush(self) -> None:
        """Release the collected completions, batch after batch, until none is left."""
        try:
            while (batch := self._batch) is not None:
                self._batch = None
                try:
                    await self._release(batch.members, used=True)
                except Exception as exc:
                    batch.done.set_exception(exc)
                    # Every waiter of the batch may have been cancelled: nobody else looks.
                    batch.done.exception()
                else:
                    batch.done.set_result(None)
        finally:
            self._flusher = None

    async def _release(self, members: Sequence[str], *, used: bool) -> None:
        view = await self._call(self._release_script, "1" if used else "0", *members)
        if used and view.count < len(members):
            logger.warning(
                "%d %s call(s) outlived their budget lease of %.1f s: their slots were freed "
                "before the calls completed (raise the lease above the upstream timeouts)",
                len(members) - view.count,
                self._operation,
                self._lease,
            )

    # --- Redis and estimates ----------------------------------------------------------------

    async def _call(self, script: AsyncScript, *args: str | int | float) -> _View:
        taken_at = self._clock()
        self._round_trips += 1
        try:
            reply = await script(keys=self._keys, args=[*self._common, *args])
        except REDIS_UNAVAILABLE as exc:
            raise BudgetBackendError(redis_unavailable(exc).reason) from exc
        finally:
            self._round_trips -= 1
        view = self._parse(reply, taken_at)
        if self._view is None or view.taken_at >= self._view.taken_at:
            self._view = view
        return view

    def _parse(self, reply: list[int], taken_at: float) -> _View:
        count, base_milli, ceiling_milli, since_us, recent_count = reply[:5]
        recent = tuple(taken_at + offset / 1e6 for offset in reply[5 : 5 + recent_count])
        soonest = taken_at + self._window
        leases = (min(taken_at + offset / 1e6, soonest) for offset in reply[5 + recent_count :])
        decrease = None
        if base_milli >= 0:
            # No ceiling (-1): the hash was written by a version without ceilings.
            ceiling = self._limit if ceiling_milli < 0 else ceiling_milli / 1000
            decrease = Decrease(base=base_milli / 1000, ceiling=ceiling)
        return _View(
            count=count,
            taken_at=taken_at,
            decrease=decrease,
            since=max(0.0, since_us / 1e6),
            recent=recent,
            frees=tuple(sorted((*recent, *leases))),
        )

    def _grants_at(self, when: float) -> int:
        """The slots the fleet may hold at `when`, by the latest view."""
        view = self._view
        if view is None or math.isinf(when):
            return self._limit
        return self._rule.grants(
            self._rule.effective(view.decrease, view.since + when - view.taken_at)
        )

    def _ceiling_at(self, when: float) -> float:
        """The fleet's ceiling at `when`, by the latest view."""
        view = self._view
        if view is None:
            return self._limit
        return self._rule.ceiling(view.decrease, view.since + when - view.taken_at)

    def _estimate(self, position: int, now: float, horizon: float) -> float:
        """Lower bound on when the waiter `position` grants away gets a slot, with the limit
        as it may be by `horizon`: the later of what the latest view says and what this
        process knows of its own slots."""
        limit = self._grants_at(horizon)
        eta = now
        view = self._view
        if view is not None:
            frees = view.frees
            eta = earliest_grant(
                position,
                now=now,
                limit=limit,
                window=self._window,
                held=len(frees),
                free_at=frees.__getitem__,
            )
        own = self._own_expiries
        while own and own[0] <= now:
            own.popleft()
        recent = len(own)

        def own_free_at(i: int) -> float:
            return own[i] if i < recent else now + self._window

        mine = earliest_grant(
            position,
            now=now,
            limit=limit,
            window=self._window,
            held=self._in_flight + recent,
            free_at=own_free_at,
        )
        return max(eta, mine)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return schedule(self._call_later, delay, callback)


def _copy(exc: Exception) -> Exception:
    if isinstance(exc, BudgetBackendError):
        copy = BudgetBackendError(exc.reason)
        copy.__cause__ = exc.__cause__
        return copy
    return exc  # a bug: shared as it is, logged once above


def _us(seconds: float) -> int:
    return math.ceil(seconds * 1e6)


class _Slot:
    """`async with budget.slot(deadline, key=k)`: one fleet-wide slot, held from entry to exit
    plus the window."""

    __slots__ = ("_budget", "_deadline", "_key", "_member")

    def __init__(self, budget: RedisBudget, deadline: float, key: Hashable | None) -> None:
        self._budget = budget
        self._deadline = deadline
        self._key = key
        self._member: str | None = None

    async def __aenter__(self) -> None:
        if self._member is not None:
            raise RuntimeError("A budget slot context manager cannot be entered twice.")
        self._member = await self._budget._acquire_slot(self._deadline, self._key)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        member, self._member = self._member, None
        if member is None:
            return
        try:
            # Success, error or cancellation alike: the call may have reached the upstream.
            await self._budget._complete(member)
        except BudgetBackendError as failure:
            if exc_type is not None and not issubclass(exc_type, Exception):
                # Cancelled (or exiting): that must go on; the slot's lease frees it.
                logger.warning("Releasing a budget slot failed: %s", failure.reason)
                return
            raise
