"""`AdaptiveLimit`: the requests a process lets run at once, from how long requests waited to
start, with time given by hand."""

from __future__ import annotations

import asyncio

from gateway.adaptive_limit import AdaptiveLimit
from gateway.admission import Admission, stamp_arrival
from tests.support.waiting import eventually
from tests.test_admission import App, Clock, call, http_scope


def test_it_starts_at_the_ceiling_and_short_waits_keep_it_there() -> None:
    limit = AdaptiveLimit(target_wait=0.05, ceiling=100)
    for now in range(50):
        limit.observe(0.001, running=99, now=float(now))
    assert limit.limit == 100
    assert limit.admits(99)
    assert not limit.admits(100)


def test_a_long_wait_lowers_it_to_three_quarters_of_what_runs_never_under_the_floor() -> None:
    limit = AdaptiveLimit(target_wait=0.05, ceiling=1000, floor=8)
    limit.observe(0.2, running=40, now=10.0)
    assert limit.limit == 30
    limit.observe(0.2, running=30, now=10.1)
    assert limit.limit == 22.5
    for step in range(20):
        limit.observe(0.2, running=30, now=10.2 + step * 0.1)
    assert limit.limit == 8


def test_the_waits_of_one_stall_lower_it_once() -> None:
    limit = AdaptiveLimit(target_wait=0.05, ceiling=1000)
    for index in range(10):  # ten requests read after the same 0.3 s stall
        limit.observe(0.3, running=40, now=10.0 + index * 0.001)
    assert limit.limit == 30
    limit.observe(0.3, running=40, now=10.06)  # a target wait later: a new signal
    assert limit.limit == 22.5


def test_short_waits_raise_it_by_one_per_limits_worth_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(target_wait=0.05, ceiling=12, floor=8)
    limit.observe(1.0, running=4, now=0.0)
    assert limit.limit == 8
    for _ in range(8):
        limit.observe(0.001, running=0, now=1.0)
    assert 8.9 < limit.limit < 9.0  # 8 short waits: nearly one more
    for _ in range(1000):
        limit.observe(0.001, running=0, now=1.0)
    assert limit.limit == 12


async def test_admission_refuses_beyond_the_learned_limit_and_lets_in_again_later() -> None:
    clock, app, shed = Clock(), App(hold=True), list[str]()
    adaptive = AdaptiveLimit(target_wait=0.05, ceiling=100, floor=2)
    gate = Admission(app, default_timeout=10.0, adaptive=adaptive, clock=clock, shed=shed.append)

    held = [asyncio.ensure_future(call(gate, http_scope())) for _ in range(4)]
    await eventually(lambda: gate.running == 4, "four requests running")
    slow = http_scope()
    stamp_arrival(slow, clock.now - 0.2)  # read after a 0.2 s stall: 4 running, limit 3
    _, body = await call(gate, slow)
    assert body["errors"][0]["extensions"]["code"] == "OVERLOADED"
    assert adaptive.limit == 3

    app.release.set()
    await asyncio.gather(*held)
    app.hold = False
    assert await call(gate, http_scope()) == (200, {})
    assert (len(app.ran), shed) == (5, ["overloaded"])
