"""The per-action QPS limit (a rolling 1-second window) and the call statistics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from gateway.mps.signing import RpcSignatureV1
from gateway.settings import SimulatorSettings
from gateway.simulator import DOC_EXAMPLE_JOB_ID, create_simulator_app
from gateway.simulator.window import ActionMeter, SecondCounts
from tests.servers import run_asgi_server
from tests.simulator.conftest import (
    AK,
    SECRET,
    ManualClock,
    query_params,
    simulator_of,
    submit_params,
)

QUERY = "QueryIProductionJob"
SUBMIT = "SubmitIProductionJob"


def asgi_client(app: Starlette, clock: ManualClock) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, SECRET, clock=clock),
    )


async def query(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))


async def test_the_call_over_the_limit_is_throttled(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(qps=5)
    async with asgi_client(app, clock) as client:
        statuses = [(await query(client)).status_code for _ in range(5)]
        throttled = await query(client)
        clock.advance(0.999)  # the window still holds the first five
        still = await query(client)
        clock.advance(0.001)  # now they are exactly one second old: out of the window
        again = await query(client)
    assert statuses == [200] * 5
    assert throttled.status_code == 400
    body = throttled.json()
    assert body["Code"] == "Throttling.User"
    assert body["Message"] == "Request was denied due to user flow control."
    assert still.json()["Code"] == "Throttling.User"
    assert again.status_code == 200
    stats = (await _admin(app).get("/_simulator/stats")).json()
    assert stats["qps"] == 5
    assert stats["actions"][QUERY] == {"calls": 8, "throttled": 2, "peakWindow": 7}
    assert stats["actions"][SUBMIT] == {"calls": 0, "throttled": 0, "peakWindow": 0}


async def test_arrivals_are_counted_per_second_since_the_first(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(qps=5)
    async with asgi_client(app, clock) as client, _admin(app) as admin:
        clock.advance(7.25)  # the count starts at the first call, not when the simulator did
        for _ in range(6):  # the sixth is throttled, and counted all the same
            await query(client)
        clock.advance(0.9)  # still the first second
        await query(client)
        clock.advance(2.0)  # a second with nothing, then one call
        await query(client)
        timeline = (await admin.get("/_simulator/stats")).json()["arrivalsPerSecond"]
        assert timeline[QUERY] == {"fromSecond": 0, "counts": [7, 0, 1]}
        assert timeline[SUBMIT] == {"fromSecond": 0, "counts": []}
        reset = (await admin.post("/_simulator/stats/reset")).json()
        assert reset["arrivalsPerSecond"][QUERY] == {"fromSecond": 0, "counts": []}
        clock.advance(5.0)
        await query(client)
        stats = (await admin.get("/_simulator/stats")).json()
        assert stats["arrivalsPerSecond"][QUERY] == {"fromSecond": 0, "counts": [1]}


def test_the_timeline_keeps_the_last_seconds_only() -> None:
    timeline = SecondCounts(seconds=3)
    for second in (0.5, 1.5, 1.6, 4.2, 5.0):
        timeline.add(100.0 + second)
    assert timeline.as_json() == {"fromSecond": 2, "counts": [0, 1, 1]}


def _admin(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://simulator")


async def test_each_action_has_its_own_limit(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(qps=2)
    async with asgi_client(app, clock) as client:
        queries = [(await query(client)).status_code for _ in range(3)]
        submits = [
            (await client.post("/", data=submit_params("Cover"))).status_code for _ in range(3)
        ]
    assert queries == [200, 200, 400]
    assert submits == [200, 200, 400]


async def test_limit_and_stats_through_the_admin_api(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(qps=100)
    async with asgi_client(app, clock) as client, _admin(app) as admin:
        faults = (await admin.put("/_simulator/faults", json={"qps": 3})).json()
        assert faults["qps"] == 3
        statuses = [(await query(client)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 400]
        reset = (await admin.post("/_simulator/stats/reset")).json()
        assert reset["actions"][QUERY] == {"calls": 0, "throttled": 0, "peakWindow": 0}
        assert reset["signatures"] == {"v1": 0, "v3": 0}
        # The limit is not a statistic: the window is still full after a reset.
        assert (await query(client)).status_code == 400
        stats = (await admin.get("/_simulator/stats")).json()
        assert stats["actions"][QUERY] == {"calls": 1, "throttled": 1, "peakWindow": 1}
        assert stats["signatures"] == {"v1": 1, "v3": 0}


def brute_force_peak(times: list[float]) -> int:
    """Most arrivals in any half-open window [s, s + 1 s), trying every arrival as s."""
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


# Arrival times on a 1/1024 s grid: "exactly one second apart" happens often, and binary
# fractions keep `t - 1.0` exact, so the window edges are not blurred by float rounding.
arrivals = st.lists(st.integers(min_value=0, max_value=5 * 1024), max_size=80).map(
    lambda ticks: sorted(tick / 1024 for tick in ticks)
)


@settings(max_examples=200, deadline=None)
@given(times=arrivals, limit=st.integers(min_value=1, max_value=10))
def test_peak_is_exact_and_admissions_respect_the_limit(times: list[float], limit: int) -> None:
    meter = ActionMeter()
    admitted = [t for t in times if meter.admit(t, limit)]
    assert meter.calls == len(times)
    assert meter.throttled == len(times) - len(admitted)
    assert meter.peak_window == brute_force_peak(times)
    assert brute_force_peak(admitted) <= limit
    # Nothing was refused that the limit allowed: each refusal had `limit` admissions before it,
    # within the second.
    for t in times:
        if t not in admitted:
            assert sum(1 for a in admitted if t - 1.0 < a <= t) >= limit


def test_peak_of_a_burst() -> None:
    meter = ActionMeter()
    for t in [0.0] * 3 + [0.5] * 4 + [1.0] * 2 + [1.4] * 3:
        meter.admit(t, limit=100)
    # (0.4, 1.4] holds 0.5 x4, 1.0 x2, 1.4 x3 = 9.
    assert meter.peak_window == 9


async def test_a_real_burst_on_a_real_port(clock: ManualClock) -> None:
    # The simulator's clock stands still: the 8 calls arrive within one second of it, however
    # long the machine takes to send them.
    app = create_simulator_app(SimulatorSettings(qps=5), clock=clock)
    auth = RpcSignatureV1(AK, SECRET, clock=clock)
    with run_asgi_server(app) as url:
        async with httpx.AsyncClient(base_url=url, auth=auth) as client:
            responses = await asyncio.gather(*(query(client) for _ in range(8)))
    codes = sorted(r.json().get("Code", "OK") for r in responses)
    assert codes == ["OK"] * 5 + ["Throttling.User"] * 3
    meter = simulator_of(app).meters[QUERY]
    assert (meter.calls, meter.throttled, meter.peak_window) == (8, 3, 8)
