"""FailoverLedger: a fake shared ledger and a real local one, behind the real waiting, on a
manual clock; then a real redis-server that the test stops and starts again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import redis.exceptions

from gateway import errors
from gateway.budget import FailoverLedger, LocalLedger, RedisLedger, SlotBudget
from gateway.budget.failover import FailoverSlot
from gateway.budget.ledger import LedgerStatus, Taken
from gateway.shared.backend import BackendUnavailable, open_redis
from gateway.shared.switch import BackendSwitch
from tests.jobs.jobfakes import ManualClock
from tests.support.redis import RedisServer

PROBE_INTERVAL = 1.0
SETTLE = 0.5
BOTH_WINDOW = 2.0
SHARED_LIMIT, LOCAL_LIMIT = 100, 3


def outage() -> BackendUnavailable:
    return BackendUnavailable("redis", "ConnectionError: Error 111 connecting to 10.0.0.5:6379")


class FakeShared:
    """A shared ledger that grants every slot asked for, unless `down` (BackendUnavailable)
    or `full` (nothing granted); `release_down` makes releases fail. Records what happened."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.down = False
        self.full = False
        self.release_down = False
        self.asked = 0
        self.numbers = 0
        self.held: set[str] = set()
        self.finished: list[tuple[str, bool]] = []
        self.throttles = 0
        self.gate: asyncio.Event | None = None

    @property
    def limit(self) -> int:
        return SHARED_LIMIT

    @property
    def window(self) -> float:
        return 1.0

    async def take(self, want: int) -> Taken[str]:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise outage()
        if self.full:
            return Taken((), self.clock() + 0.5)
        tokens = tuple(f"m{self.numbers + i}" for i in range(want))
        self.numbers += want
        self.held.update(tokens)
        return Taken(tokens, self.clock())

    async def finish(self, token: str, *, used: bool) -> None:
        if self.release_down:
            raise outage()
        self.held.discard(token)
        self.finished.append((token, used))

    async def throttled(self) -> None:
        if self.down:
            raise outage()
        self.throttles += 1

    def earliest(self, position: int, now: float, horizon: float) -> float:
        return now

    def status(self, now: float) -> LedgerStatus:
        return LedgerStatus(SHARED_LIMIT, SHARED_LIMIT, 1.0, len(self.held), SHARED_LIMIT)

    async def aclose(self) -> None:
        pass


class Rig:
    """A failover budget over `shared` and a local share of 3 calls per second."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.shared = FakeShared(clock)
        self.local = LocalLedger(LOCAL_LIMIT, 1.0, clock=clock)
        self.switch = BackendSwitch(
            probe_interval=PROBE_INTERVAL,
            clock=clock,
            local_mode="serving on a local budget of 3 calls/s",
            shared_mode="serving on the shared budget of 100 calls/s",
        )
        self.ledger = FailoverLedger(
            self.shared,
            self.local,
            self.switch,
            settle=SETTLE,
            both_window=BOTH_WINDOW,
            clock=clock,
        )
        self.budget = SlotBudget(
            self.ledger, max_in_flight=50, clock=clock, call_later=clock.call_later
        )
        self.log: list[tuple[float, str, FailoverSlot]] = []
        self.gate = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def call(self, name: str, *, hold: bool = False, deadline: float = 60.0) -> asyncio.Task[None]:
        """A call that records when it was granted and on which side(s); `hold` keeps it in
        flight until `release()`."""

        async def run() -> None:
            async with self.budget.slot(self.clock() + deadline):
                self.log.append((self.clock(), name, self.current_slot()))
                if hold:
                    await self.gate.wait()

        task = asyncio.create_task(run(), name=name)
        self.tasks.append(task)
        return task

    def current_slot(self) -> FailoverSlot:
        # The slot just granted is the newest outstanding one.
        return list(self.ledger._outstanding)[-1]

    def sides(self, name: str) -> str:
        [slot] = [slot for _, logged, slot in self.log if logged == name]
        shared = "shared" if slot.member is not None else ""
        local = "local" if slot.local else ""
        return "+".join(side for side in (shared, local) if side)

    def granted(self) -> list[str]:
        return [name for _, name, _ in self.log]

    async def release(self) -> None:
        """The calls holding their slots complete."""
        holding = [task for task in self.tasks if task.get_name() in self.granted()]
        self.gate.set()
        await asyncio.gather(*holding, return_exceptions=True)
        self.gate = asyncio.Event()

    async def fail_over(self) -> None:
        """Redis goes down; one call notices (it is served locally once settled in)."""
        self.shared.down = True
        self.call("noticing")
        await self.clock.advance(SETTLE)
        assert self.switch.degraded


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def rig(clock: ManualClock) -> AsyncIterator[Rig]:
    rig = Rig(clock)
    try:
        yield rig
    finally:
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)
        await rig.budget.aclose()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "gateway.shared.switch" and record.levelno == logging.WARNING
    ]


async def test_falls_back_after_settling_in_and_says_so_once(
    rig: Rig, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    rig.shared.down = True
    start = clock()
    for name in ("a", "b", "c"):
        rig.call(name)
    await clock.advance(SETTLE - 0.01)
    assert rig.granted() == []  # the fleet's last window through Redis still counts upstream
    await clock.advance(0.01)
    assert rig.granted() == ["a", "b", "c"]
    assert {rig.sides(name) for name in ("a", "b", "c")} == {"local"}
    assert [when - start for when, _, _ in rig.log] == [SETTLE] * 3
    assert rig.shared.asked == 1  # no probe within the interval
    assert rig.budget.limit == LOCAL_LIMIT
    assert warnings(caplog) == [
        "Redis unreachable (ConnectionError: Error 111 connecting to 10.0.0.5:6379): serving on "
        "a local budget of 3 calls/s"
    ]


async def test_settling_in_refuses_a_deadline_it_cannot_meet_with_when_to_retry(
    rig: Rig, clock: ManualClock
) -> None:
    rig.shared.down = True
    rig.call("noticing")
    await clock.advance(0)
    assert rig.switch.degraded
    with pytest.raises(errors.BudgetExhausted) as exhausted:
        async with rig.budget.slot(clock() + SETTLE / 2):
            raise AssertionError("must not be granted")
    assert exhausted.value.retry_after == pytest.approx(SETTLE)


async def test_a_due_probe_goes_to_redis_at_once_not_behind_local_waiters(
    rig: Rig, clock: ManualClock
) -> None:
    await rig.fail_over()
    # The local share is used up, and a backlog waits for it.
    for index in range(12):
        rig.call(f"w{index}")
    await clock.advance(0)
    assert len(rig.granted()) == LOCAL_LIMIT  # "noticing", w0, w1
    rig.shared.down = False
    asked = rig.shared.asked
    # The probe is due one interval after the failure, long before a local slot frees.
    await clock.advance(PROBE_INTERVAL - SETTLE)
    assert rig.shared.asked == asked + 1
    assert not rig.switch.degraded
    # The probe's grant holds a slot on both sides (settling back), so it waits for a local
    # one: nothing more is granted while the local share is full.
    assert len(rig.granted()) == LOCAL_LIMIT


async def test_waiters_queued_while_degraded_get_redis_slots_once_it_is_back(
    rig: Rig, clock: ManualClock
) -> None:
    await rig.fail_over()
    for index in range(20):
        rig.call(f"w{index}", deadline=600.0)
    await clock.advance(0)
    rig.shared.down = False
    # Back at the next probe; every grant from then on is decided then: both sides while
    # settling back, Redis alone after.
    await clock.advance(PROBE_INTERVAL + BOTH_WINDOW + 3.0)
    back = clock() - BOTH_WINDOW - 3.0 - (PROBE_INTERVAL - SETTLE)
    for when, name, slot in rig.log:
        if name == "noticing":
            continue
        if when < back:
            assert (slot.member, slot.local) == (None, True), (when - back, name)
        elif when < back + BOTH_WINDOW:
            assert (slot.member is not None, slot.local) == (True, True), (when - back, name)
        else:
            assert (slot.member is not None, slot.local) == (True, False), (when - back, name)
    assert len(rig.granted()) == 21  # all served; the last ones by Redis alone
    assert any(slot.member is not None and not slot.local for _, _, slot in rig.log)


async def test_settling_back_takes_both_sides_for_the_window_then_redis_alone(
    rig: Rig, clock: ManualClock
) -> None:
    await rig.fail_over()
    rig.shared.down = False
    await clock.advance(PROBE_INTERVAL)  # past the next probe's time; the next call probes
    rig.call("probe")
    await clock.advance(0)
    assert rig.sides("probe") == "shared+local"
    back = clock()
    await clock.advance(BOTH_WINDOW - 0.01)
    rig.call("late")
    await clock.advance(0)
    assert rig.sides("late") == "shared+local"
    await clock.advance(0.01)
    rig.call("after")
    await clock.advance(0)
    assert rig.sides("after") == "shared"
    assert clock() - back == pytest.approx(BOTH_WINDOW)


async def test_a_full_shared_budget_while_settling_back_gives_the_local_slot_back(
    rig: Rig, clock: ManualClock
) -> None:
    await rig.fail_over()
    rig.shared.down, rig.shared.full = False, True
    await clock.advance(PROBE_INTERVAL)
    rig.call("probe", deadline=0.2)  # Redis answers "full": it is back, and this waits
    await clock.advance(0.3)
    assert not rig.switch.degraded
    assert rig.granted() == ["noticing"]
    # Only the call that noticed the outage holds a local slot (for a window after it ran).
    assert rig.local.status(clock()).held == 0


async def test_a_call_in_flight_on_redis_counts_locally_after_a_failover(
    rig: Rig, clock: ManualClock
) -> None:
    for index in range(LOCAL_LIMIT):
        rig.call(f"shared{index}", hold=True)
    await clock.advance(0)
    assert {rig.sides(f"shared{index}") for index in range(LOCAL_LIMIT)} == {"shared"}
    rig.shared.down = True
    rig.call("noticing")
    await clock.advance(SETTLE + 0.1)
    # The three calls still in flight hold this process's whole local share: nothing more
    # goes out until they complete and their window passes.
    assert "noticing" not in rig.granted()
    await rig.release()  # the shared calls complete (their releases fail: Redis is down)
    await clock.advance(1.0)
    assert "noticing" in rig.granted()


async def test_a_release_that_cannot_reach_redis_does_not_fail_the_call(
    rig: Rig, clock: ManualClock
) -> None:
    rig.shared.release_down = True
    async with rig.budget.slot(clock() + 5):
        pass
    assert rig.switch.degraded
    assert rig.shared.held  # left to expire in Redis


async def test_the_body_s_error_passes_through_and_the_slot_is_released(
    rig: Rig, clock: ManualClock
) -> None:
    with pytest.raises(errors.UpstreamTimeout):
        async with rig.budget.slot(clock() + 5):
            raise errors.UpstreamTimeout("The upstream did not answer in time.")
    assert rig.shared.finished == [("m0", True)]
    assert not rig.switch.degraded


async def test_throttles_go_to_the_side_serving(rig: Rig, clock: ManualClock) -> None:
    await rig.budget.throttled()
    assert rig.shared.throttles == 1
    rig.shared.down = True
    await rig.budget.throttled()  # Redis fails here first: the local budget slows down instead
    assert rig.switch.degraded
    assert rig.local.status(clock()).effective_limit == 1  # 3 halved, at least 1


async def test_a_health_check_stands_in_for_a_probe_when_one_is_due(
    rig: Rig, clock: ManualClock
) -> None:
    await rig.fail_over()
    rig.shared.down = False
    asked = rig.shared.asked
    rig.switch.answered()  # within the probe interval: not yet
    assert rig.switch.degraded
    await clock.advance(PROBE_INTERVAL)
    rig.switch.answered()  # an idle process learns that Redis is back without a call
    assert not rig.switch.degraded
    assert rig.shared.asked == asked


async def test_closing_answers_the_waiters_at_once(rig: Rig, clock: ManualClock) -> None:
    rig.shared.full = True
    waiting = rig.call("waiting")
    await clock.advance(0.1)
    rig.budget.close()
    with pytest.raises(errors.ShuttingDown):
        await waiting
    with pytest.raises(errors.ShuttingDown):
        async with rig.budget.slot(clock() + 5):
            pass
    rig.tasks.remove(waiting)


# --- a real Redis that goes away and comes back ------------------------------------------------


async def test_a_real_redis_budget_that_stops_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer()
    server.start()
    client: redis.asyncio.Redis = open_redis(server.url, timeout=0.5)
    switch = BackendSwitch(probe_interval=0.2, local_mode="local", shared_mode="shared")
    shared = RedisLedger(
        client, operation="TestOperation", limit=5, window=1.0, lease=3.0, prefix="test"
    )
    budget = SlotBudget(
        FailoverLedger(shared, LocalLedger(2, 1.0), switch, settle=0.1, both_window=0.5),
        max_in_flight=5,
    )
    slots_key = shared.keys[0]
    try:
        async with budget.slot(time.monotonic() + 2):
            assert await client.zcard(slots_key) == 1  # the slot is held in Redis

        server.kill()
        async with budget.slot(time.monotonic() + 30):
            assert switch.degraded
            assert budget.limit == 2

        server.restart()  # on the same port, empty
        await asyncio.sleep(0.25)  # past the next probe time
        async with budget.slot(time.monotonic() + 30):
            assert not switch.degraded
            assert await client.zcard(slots_key) == 1
    finally:
        await budget.aclose()
        await client.aclose()
        server.close()
    assert [message.split(" (")[0] for message in warnings(caplog)] == [
        "Redis unreachable",
        "Redis reachable again: shared",
    ]
