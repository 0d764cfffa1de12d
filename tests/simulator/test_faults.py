"""Faults on demand: 503s, garbled bodies, dropped connections, latency."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from gateway.mps.signing import RpcSignatureV1
from gateway.settings import SimulatorSettings
from gateway.simulator import (
    DOC_EXAMPLE_JOB_ID,
    ConnectionDropped,
    DroppedConnectionLogFilter,
    create_simulator_app,
)
from tests.servers import run_asgi_server
from tests.simulator.conftest import AK, SECRET, ManualClock, query_params, simulator_of
from tests.support.waiting import eventually

QUERY = "QueryIProductionJob"


def asgi_client(app: Starlette, clock: ManualClock) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, SECRET, clock=clock),
    )


async def query(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))


async def test_error_rate_answers_service_unavailable(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(error_rate=1.0)
    async with asgi_client(app, clock) as client:
        response = await query(client)
    assert response.status_code == 503
    body = response.json()
    assert body["Code"] == "ServiceUnavailable"
    assert body["Message"] == "The request has failed due to a temporary failure of the server."
    # A faulty answer is still a call.
    assert simulator_of(app).meters[QUERY].calls == 1


async def test_malformed_rate_garbles_the_body(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(malformed_rate=1.0)
    async with asgi_client(app, clock) as client:
        response = await query(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.content.startswith(b'{"RequestId":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_faults_do_not_touch_refused_calls(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(error_rate=1.0, qps=1)
    async with asgi_client(app, clock) as client:
        assert (await query(client)).status_code == 503
        assert (await query(client)).json()["Code"] == "Throttling.User"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://simulator",
        auth=RpcSignatureV1(AK, "wrong", clock=clock),
    ) as client:
        assert (await query(client)).json()["Code"] == "SignatureDoesNotMatch"


async def test_drop_in_process_is_a_transport_error(
    make_app: Callable[..., Starlette], clock: ManualClock
) -> None:
    app = make_app(drop_rate=1.0)
    async with asgi_client(app, clock) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await query(client)
    assert isinstance(caught.value, httpx.RemoteProtocolError)
    assert isinstance(caught.value, ConnectionDropped)
    assert simulator_of(app).meters[QUERY].calls == 1


@pytest.fixture
def quiet_drops() -> Iterator[None]:
    server_log = logging.getLogger("uvicorn.error")
    log_filter = DroppedConnectionLogFilter()
    server_log.addFilter(log_filter)
    yield
    server_log.removeFilter(log_filter)


@pytest.mark.usefixtures("quiet_drops")
async def test_drop_on_a_real_port_cuts_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    app = create_simulator_app(SimulatorSettings(drop_rate=1.0))
    with caplog.at_level(logging.ERROR), run_asgi_server(app) as url:
        async with httpx.AsyncClient(base_url=url, auth=RpcSignatureV1(AK, SECRET)) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await query(client)
            # The server survives: turn the fault off and the next call is answered.
            await client.put("/_simulator/faults", json={"dropRate": 0})
            assert (await query(client)).status_code == 200
    # The deliberate drop was not logged as an application error.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_the_log_filter_passes_other_records() -> None:
    log_filter = DroppedConnectionLogFilter()
    other = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "boom", None, None)
    assert log_filter.filter(other)
    try:
        raise ConnectionDropped()
    except ConnectionDropped as exc:
        dropped = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "x", None, (type(exc), exc, None)
        )
    assert not log_filter.filter(dropped)


async def test_latency_is_added(clock: ManualClock) -> None:
    asked: list[float] = []
    latency = asyncio.Event()

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await latency.wait()  # the test decides when the latency is over

    app = create_simulator_app(
        SimulatorSettings(latency_ms=150, latency_jitter_ms=20), clock=clock, sleep=sleep
    )
    async with asgi_client(app, clock) as client:
        answer = asyncio.create_task(query(client))
        await eventually(lambda: asked != [], "the simulator waiting out its latency")
        assert not answer.done()  # the answer waits for the latency
        latency.set()
        response = await answer
    assert response.status_code == 200
    [seconds] = asked
    assert 0.130 <= seconds <= 0.170  # 150 ms, give or take the 20 ms of jitter


async def test_faults_admin_api(app: Starlette) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://simulator"
    ) as admin:
        assert (await admin.get("/_simulator/faults")).json() == {
            "latencyMs": 0.0,
            "latencyJitterMs": 0.0,
            "errorRate": 0.0,
            "malformedRate": 0.0,
            "dropRate": 0.0,
            "qps": 100,
        }
        updated = await admin.put(
            "/_simulator/faults", json={"latencyMs": 5, "errorRate": 0.25, "qps": 7}
        )
        assert updated.json() == {
            "latencyMs": 5.0,
            "latencyJitterMs": 0.0,
            "errorRate": 0.25,
            "malformedRate": 0.0,
            "dropRate": 0.0,
            "qps": 7,
        }
        assert simulator_of(app).faults.error_rate == 0.25
        for bad in ({"errorRate": 2}, {"qps": 0}, {"latency": 5}):
            response = await admin.put("/_simulator/faults", json=bad)
            assert response.status_code == 400
            assert response.json()["error"].startswith("Invalid faults: ")
        assert (await admin.get("/_simulator/faults")).json()["errorRate"] == 0.25


async def test_fault_decisions_are_seeded(clock: ManualClock) -> None:
    async def outcomes(seed: int) -> list[int]:
        app = create_simulator_app(SimulatorSettings(seed=seed, error_rate=0.5), clock=clock)
        async with asgi_client(app, clock) as client:
            return [(await query(client)).status_code for _ in range(20)]

    first = await outcomes(1)
    assert await outcomes(1) == first
    assert set(first) == {200, 503}
