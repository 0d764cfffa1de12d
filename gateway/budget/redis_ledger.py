"""`RedisLedger` and `RedisBudget`: one budget for every gateway process, kept in Redis.

The slots are one sorted set (member -> when the slot frees: its lease expiry while the call is
in flight, completion + window after), so a process that dies mid-call holds its slots only
until their leases expire. The AIMD state is a hash that the scripts only store and read; the
arithmetic is `AimdRule`'s, in Python. The scripts (`scripts/*.lua`) run on Redis's clock and
answer counts and the earliest expiry, never the whole set. A grant costs one round trip (or a
share of one: the pump asks for its waiters together) and a release a share of one (releases
made together go in one pipeline).
"""

from __future__ import annotations

import collections
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from redis.commands.core import AsyncScript

from gateway.budget.actions import QUERY_JOB, limit_of
from gateway.budget.aimd import (
    DEFAULT_CEILING_FACTOR,
    DEFAULT_CEILING_RECOVERY_TIME,
    DEFAULT_DECREASE_FACTOR,
    DEFAULT_RECOVERY_RATE,
    AimdRule,
    Decrease,
)
from gateway.budget.ledger import LedgerStatus, Taken, earliest_grant
from gateway.budget.timers import CallLater
from gateway.budget.waiting import SlotBudget
from gateway.settings import GatewaySettings
from gateway.shared.backend import REDIS_UNAVAILABLE, RedisClient, redis_unavailable
from gateway.shared.pipelining import ScriptBatcher

__all__ = ["QUERY_JOB", "RedisBudget", "RedisLedger"]

logger = logging.getLogger(__name__)

#: Shortest wait before asking again after "full": never a busy loop.
_MIN_NAP: Final = 0.001
#: Added to every key's TTL, beyond what its content needs.
_TTL_SLACK: Final = 1.0


def _script(name: str) -> str:
    return (resources.files("gateway.budget") / "scripts" / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class _Slots:
    """The fleet's slots as a script answer described them, on this process's clock (times
    from when the script was called: early, so the estimates stay lower bounds)."""

    #: Slots held when the script ran.
    held: int
    #: The earliest a held slot can free: its expiry, or for a call in flight (whose score
    #: is a lease) `window` after `taken_at`, had it completed then.
    first_free: float


@dataclass(frozen=True, slots=True)
class _Aimd:
    """The fleet's AIMD state as last read."""

    decrease: Decrease | None
    #: Seconds from the decrease to `taken_at`.
    since: float
    version: str
    #: When the answer arrived (after the script ran: `since` extrapolated from it is short,
    #: so the effective limit, which grows with it, is never overstated).
    taken_at: float


class RedisLedger:
    """A `Ledger` shared by every process using the same Redis, `prefix` and `operation`; its
    tokens are the slots' members.

    Every process of the fleet must use the same `limit`, `window`, `lease` and AIMD
    parameters. `clock` is this process's (deadlines); Redis's own clock times the slots.
    `redis` must have socket timeouts (`gateway.shared.backend.open_redis`); the ledger never
    closes it. When Redis does not answer, `take`, `finish` and `throttled` raise
    `BackendUnavailable`; any other Redis error is a bug and propagates as it is.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        operation: str,
        limit: int,
        window: float,
        lease: float,
        decrease_factor: float = DEFAULT_DECREASE_FACTOR,
        recovery_rate: float = DEFAULT_RECOVERY_RATE,
        ceiling_factor: float = DEFAULT_CEILING_FACTOR,
        ceiling_recovery_time: float = DEFAULT_CEILING_RECOVERY_TIME,
        prefix: str = "mpsgw",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError(f"Expected a window of more than 0 seconds, received {window}.")
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
        self._lease = lease
        self._operation = operation
        self._clock = clock
        # One hash tag: both keys live in one Redis Cluster slot, as a script needs.
        base = f"{prefix}:budget:{{{operation}}}"
        self._slots_key = f"{base}:slots"
        self._aimd_key = f"{base}:aimd"
        self._slots_ttl_ms = math.ceil((lease + _TTL_SLACK) * 1000)
        self._acquire = redis.register_script(_script("acquire"))
        self._release = redis.register_script(_script("release"))
        # Releases of calls completing together go in one pipeline.
        self._releases = ScriptBatcher(redis)
        self._throttle = redis.register_script(_script("throttle"))
        # Members are `{token}:{number}`: unique across processes and restarts.
        self._token = uuid.uuid4().hex
        self._numbers = 0
        self._slots: _Slots | None = None
        self._aimd = _Aimd(None, 0.0, "", -math.inf)
        # This process's calls in flight, and its completed calls' expiries (local clock).
        self._in_flight = 0
        self._own_expiries: collections.deque[float] = collections.deque()
        self._round_trips = 0

    @classmethod
    def from_settings(
        cls, redis: RedisClient, settings: GatewaySettings, operation: str = QUERY_JOB
    ) -> RedisLedger:
        """The fleet's slots of `operation`: its limit (`limit_of`) per (1 s + margin), leases
        that outlast a call (connect + read timeout) by a window and a second."""
        window = settings.upstream_window
        return cls(
            redis,
            operation=operation,
            limit=limit_of(settings, operation),
            window=window,
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
    def keys(self) -> tuple[str, str]:
        """The Redis keys: the slots, the AIMD state."""
        return (self._slots_key, self._aimd_key)

    @property
    def token(self) -> str:
        """What this process's members start with (`{token}:{number}`)."""
        return self._token

    @property
    def in_flight(self) -> int:
        """This process's calls granted here and not finished."""
        return self._in_flight

    @property
    def round_trips(self) -> int:
        """Script calls sent to Redis and not answered yet."""
        return self._round_trips

    async def take(self, want: int) -> Taken[str]:
        # A state that changed since it was read (another process's throttle) costs one more
        # round trip: the allowance is recomputed from the state the answer carries.
        for _ in range(2):
            version = self._aimd.version
            first = self._numbers
            self._numbers += want
            taken_at = self._clock()
            reply = await self._run(
                self._acquire,
                [self._slots_key, self._aimd_key],
                want,
                self._grants_at(taken_at),
                version,
                _us(self._lease),
                self._token,
                first,
                self._slots_ttl_ms,
            )
            granted, held, earliest = int(reply[0]), int(reply[1]), int(reply[2])
            self._read_aimd(reply[3:7], self._clock())
            first_free = taken_at + self._window
            if earliest >= 0:
                first_free = min(first_free, taken_at + earliest / 1e6)
            self._slots = _Slots(held=held, first_free=first_free)
            if granted or self._aimd.version == version:
                break
        self._in_flight += granted
        tokens = tuple(f"{self._token}:{first + i}" for i in range(granted))
        return Taken(tokens, self._retry_at())

    async def finish(self, token: str, *, used: bool) -> None:
        self._in_flight -= 1
        if used:
            self._own_expiries.append(self._clock() + self._window)
        self._round_trips += 1
        try:
            found = await self._releases.run(
                self._release,
                [self._slots_key],
                ["1" if used else "0", _us(self._window), self._slots_ttl_ms, token],
            )
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        finally:
            self._round_trips -= 1
        if used and not found:
            logger.warning(
                "A %s call outlived its budget lease of %.1f s: its slot was freed before the "
                "call completed (raise the lease above the upstream timeouts)",
                self._operation,
                self._lease,
            )

    async def throttled(self) -> None:
        rule = self._rule
        for _ in range(2):
            now = self._clock()
            state = self._aimd
            since = state.since + now - state.taken_at
            if state.decrease is not None and since < rule.holdoff:
                return  # the same burst: the script would change nothing
            decrease = rule.decreased(rule.effective(state.decrease, since))
            ttl = rule.recovered_in(decrease) + rule.holdoff + _TTL_SLACK
            reply = await self._run(
                self._throttle,
                [self._aimd_key],
                _us(rule.holdoff),
                state.version,
                f"{decrease.base:.6f}",
                f"{decrease.ceiling:.6f}",
                math.ceil(ttl * 1000),
            )
            self._read_aimd(reply[1:5], self._clock())
            if int(reply[0]):
                logger.warning(
                    "The upstream throttled although the budget held: the fleet's %s budget "
                    "is %d calls per %.3f s for now (of %d), recovering by %.1f per second up "
                    "to a ceiling of %.1f, which creeps back to %d over minutes",
                    self._operation,
                    rule.grants(decrease.base),
                    self._window,
                    self._limit,
                    rule.recovery_per_second,
                    decrease.ceiling,
                    self._limit,
                )
                return

    def earliest(self, position: int, now: float, horizon: float) -> float:
        """The later of what the last answer said of the fleet's slots (other processes can
        only have taken more since) and what this process knows of its own (its calls in
        flight free no earlier than now + window)."""
        limit = self._grants_at(horizon)
        eta = now
        slots = self._slots
        if slots is not None:
            first_free = slots.first_free
            eta = earliest_grant(
                position,
                now=now,
                limit=limit,
                window=self._window,
                held=slots.held,
                free_at=lambda i: first_free,
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

    def status(self, now: float) -> LedgerStatus:
        return LedgerStatus(
            limit=self._limit,
            effective_limit=self._grants_at(now),
            window=self._window,
            held=0 if self._slots is None else self._slots.held,
            ceiling=self._rule.grants(self._ceiling_at(now)),
        )

    async def aclose(self) -> None:
        pass

    # --- Redis and the AIMD state -----------------------------------------------------------

    async def _run(self, script: AsyncScript, keys: list[str], *args: str | int) -> Any:
        self._round_trips += 1
        try:
            reply = await script(keys=keys, args=list(args))
        except REDIS_UNAVAILABLE as exc:
            raise redis_unavailable(exc) from exc
        finally:
            self._round_trips -= 1
        return reply

    def _read_aimd(self, fields: list[bytes], taken_at: float) -> None:
        """Keep the AIMD state an answer carried (base, ceiling, us since, version)."""
        base, ceiling, since_us, version = fields
        if taken_at < self._aimd.taken_at:
            return  # an answer to an older question: the state kept is newer
        decrease = None
        if base:
            # No ceiling stored: none but the limit.
            decrease = Decrease(base=float(base), ceiling=float(ceiling or self._limit))
        self._aimd = _Aimd(
            decrease=decrease,
            since=max(0.0, int(since_us) / 1e6),
            version=version.decode() if isinstance(version, bytes) else str(version),
            taken_at=taken_at,
        )

    def _grants_at(self, when: float) -> int:
        """The slots the fleet may hold at `when`, by the state last read."""
        state = self._aimd
        if state.decrease is None or math.isinf(when):
            return self._limit
        return self._rule.grants(
            self._rule.effective(state.decrease, state.since + when - state.taken_at)
        )

    def _ceiling_at(self, when: float) -> float:
        state = self._aimd
        return self._rule.ceiling(state.decrease, state.since + when - state.taken_at)

    def _retry_at(self) -> float:
        """When asking again may succeed: the earliest a slot frees or the limit steps up,
        at least a millisecond (no busy loop) and at most a window away (an answer is not
        trusted for longer)."""
        now = self._clock()
        state = self._aimd
        step = self._rule.next_step_in(state.decrease, state.since + now - state.taken_at)
        eta = self.earliest(0, now, now)
        return min(max(now + _MIN_NAP, min(eta, now + step)), now + self._window)


def _us(seconds: float) -> int:
    return math.ceil(seconds * 1e6)


class RedisBudget(SlotBudget[str]):
    """A `Budget` shared by a fleet: a `RedisLedger` behind the fair, deadline-bound waiting of
    this process. `max_in_flight` is per process."""

    def __init__(
        self,
        redis: RedisClient,
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
        ledger = RedisLedger(
            redis,
            operation=operation,
            limit=limit,
            window=window,
            lease=lease,
            decrease_factor=decrease_factor,
            recovery_rate=recovery_rate,
            ceiling_factor=ceiling_factor,
            ceiling_recovery_time=ceiling_recovery_time,
            prefix=prefix,
            clock=clock,
        )
        super().__init__(ledger, max_in_flight=max_in_flight, clock=clock, call_later=call_later)
        self.redis_ledger = ledger

    @classmethod
    def from_settings(
        cls, redis: RedisClient, settings: GatewaySettings, operation: str = QUERY_JOB
    ) -> RedisBudget:
        window = settings.upstream_window
        return cls(
            redis,
            operation=operation,
            limit=limit_of(settings, operation),
            window=window,
            max_in_flight=settings.upstream_concurrency,
            lease=settings.connect_timeout + settings.read_timeout + window + 1.0,
            prefix=settings.redis_prefix,
        )
