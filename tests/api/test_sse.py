"""GraphQL over Server-Sent Events (graphql-sse, distinct connections) on a real gateway: what a
stream carries, how failures reach the client, and what bounds a stream (the cap per process,
keep-alive comments, slow and vanished clients). The npm `graphql-sse` client is in
tests/frontend/test_streams.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from gateway.simulator.jobs import success_result
from tests.api.conftest import GatewayServer, StartGateway, answer, without_request_ids
from tests.api.test_submit import SUBMIT, job_input
from tests.api.test_subscriptions import graphql_ws, planted, receive, start
from tests.logs import warnings_and_errors
from tests.observe.scrape import scrape, value
from tests.servers import SimulatorServer
from tests.support.sse import EVENT_STREAM, Comment, Event, operation_over_sse, stream_items
from tests.support.waiting import SAFETY_TIMEOUT, eventually

UPDATES = "subscription($id: ID!) { jobUpdates(id: $id, intervalSeconds: 0.5) { id state } }"


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def payloads(response: httpx.Response, events: list[Event]) -> list[Any]:
    """The events as (name, payload without request ids) pairs."""
    request_id = response.headers["x-request-id"]
    return [
        (event.event, without_request_ids(event.json(), request_id) if event.data else None)
        for event in events
    ]


@pytest.mark.slow
async def test_a_subscription_follows_a_job_to_its_end(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = "55e0000000000000000000000000000a"
    simulator.put_job(job_id, planted(job_id, "Queuing"))
    success = json.dumps({"Code": "Success", "Message": "Successful.", "Data": "{}"})
    with start_gateway(cache_running_ttl=0.1) as gateway:
        payload = {"query": UPDATES, "variables": {"id": job_id}}
        async with http.stream(
            "POST", gateway.graphql_url, json=payload, headers={"accept": EVENT_STREAM}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == EVENT_STREAM
            assert response.headers["cache-control"] == "no-cache, no-transform"
            seen: list[Any] = []
            moves = iter([planted(job_id, "Analysing"), planted(job_id, "Success", success)])
            async for item in stream_items(response):
                if isinstance(item, Comment):
                    continue
                seen.append((item.event, item.json() if item.data else None))
                if item.event == "complete":
                    break
                # The job moves once its current state has been seen.
                fields = next(moves, None)
                if fields is not None:
                    simulator.put_job(job_id, fields)

    def state(name: str) -> tuple[str, Any]:
        return ("next", {"data": {"jobUpdates": {"id": job_id, "state": name}}})

    assert seen == [state("QUEUING"), state("ANALYSING"), state("SUCCESS"), ("complete", None)]


async def test_a_query_is_one_next_then_complete(
    gateway: GatewayServer, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    [job_id] = simulator.demo_ids()[:1]
    payload = {
        "query": "query($id: ID!) { job(id: $id) { id state } }",
        "variables": {"id": job_id},
    }
    response, events = await operation_over_sse(http, gateway.graphql_url, payload)
    over_http = answer(await http.post(gateway.graphql_url, json=payload))
    assert payloads(response, events) == [("next", over_http), ("complete", None)]
    assert over_http["data"]["job"]["id"] == job_id


async def test_a_mutation_is_one_next_then_complete(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    payload = {"query": SUBMIT, "variables": {"input": job_input(idempotencyKey="sse-1")}}
    response, events = await operation_over_sse(http, gateway.graphql_url, payload)
    [(first, body), last] = payloads(response, events)
    assert (first, last) == ("next", ("complete", None))
    assert body["data"]["submitJob"]["job"]["state"] == "QUEUING"
    # The key's replay over plain HTTP names the same job: the stream submitted it once.
    again = answer(await http.post(gateway.graphql_url, json=payload))
    assert again["data"]["submitJob"]["replayed"] is True
    assert again["data"]["submitJob"]["job"]["id"] == body["data"]["submitJob"]["job"]["id"]


async def test_get_streams_too(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    async with http.stream(
        "GET",
        gateway.graphql_url,
        params={"query": "{ __typename }"},
        headers={"accept": EVENT_STREAM},
    ) as response:
        events = [item async for item in stream_items(response) if isinstance(item, Event)]
    assert [(event.event, event.data) for event in events] == [
        ("next", '{"data":{"__typename":"Query"}}'),
        ("complete", ""),
    ]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"query": "subscription {"}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "subscription { nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        (
            {"query": 'subscription { jobUpdates(id: "ab") { id } __typename }'},
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ({"query": UPDATES, "variables": {"id": {"not": "an id"}}}, "BAD_USER_INPUT"),
        ({"query": UPDATES}, "BAD_USER_INPUT"),
        (
            {"query": 'subscription { jobUpdates(id: "ab", intervalSeconds: 0.1) { id } }'},
            "INVALID_ARGUMENT",
        ),
        ({"query": 'subscription { jobUpdates(id: "not an id!") { id } }'}, "INVALID_JOB_ID"),
    ],
    ids=["syntax", "validation", "two-fields", "variable", "missing-variable", "range", "id"],
)
async def test_an_operation_that_fails_is_one_coded_next_then_complete(
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    payload: dict[str, Any],
    code: str,
) -> None:
    # As graphql-sse's reference server answers an Accept: text/event-stream request: the
    # stream is accepted and carries the errors, so that the client's sink gets them.
    response, events = await operation_over_sse(http, gateway.graphql_url, payload)
    assert response.status_code == 200
    [(first, body), last] = payloads(response, events)
    assert (first, last) == ("next", ("complete", None))
    assert body["data"] is None
    assert {error["extensions"]["code"] for error in body["errors"]} == {code}
    assert warnings_and_errors(caplog) == []


async def test_a_request_that_is_no_graphql_request_is_a_coded_400(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    response, events = await operation_over_sse(http, gateway.graphql_url, {"query": 7})
    assert (response.status_code, events) == (400, [])
    assert answer(response) == {
        "errors": [
            {
                "message": "The GraphQL operation's `query` must be a string or null, if provided.",
                "extensions": {"code": "BAD_REQUEST"},
            }
        ]
    }


BOTH = f"application/graphql-response+json, application/json, {EVENT_STREAM}, multipart/mixed"


async def test_a_client_accepting_json_too_gets_json_for_a_query(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # urql lists every type it reads on every request: a query needs no stream.
    response = await http.post(
        gateway.graphql_url, json={"query": "{ __typename }"}, headers={"accept": BOTH}
    )
    assert response.headers["content-type"].startswith("application/")
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_client_accepting_json_too_gets_a_stream_for_a_subscription(
    gateway: GatewayServer, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    [job_id] = simulator.demo_ids()[:1]
    query = "subscription Follow($id: ID!) { jobUpdates(id: $id) { id } } query Q { __typename }"
    payload = {"query": query, "variables": {"id": job_id}, "operationName": "Follow"}
    response, events = await operation_over_sse(
        http, gateway.graphql_url, payload, headers={"accept": BOTH}
    )
    assert payloads(response, events) == [
        ("next", {"data": {"jobUpdates": {"id": job_id}}}),
        ("complete", None),
    ]


async def test_streams_and_sockets_following_one_job_share_its_polls(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    # The same fetcher behind both transports: while the running job's snapshot is cached,
    # however many subscribers poll it, the upstream is asked once.
    job_id = "55e0000000000000000000000000000e"
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = f'subscription {{ jobUpdates(id: "{job_id}", intervalSeconds: 0.5) {{ id state }} }}'
    headers = {"accept": EVENT_STREAM}
    with start_gateway(cache_running_ttl=3600, sse_keepalive=0.5) as gateway:
        simulator.reset_stats()
        async with AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(
                    http.stream("POST", gateway.graphql_url, json={"query": query}, headers=headers)
                )
                for _ in range(5)
            ]
            sockets = [await stack.enter_async_context(graphql_ws(gateway)) for _ in range(5)]
            for socket in sockets:
                await start(socket, query, {})
            readers = [stream_items(stream) for stream in streams]
            firsts = [await next_event(reader) for reader in readers]
            firsts += [(await receive(socket))["payload"] for socket in sockets]
            # Several polls of each subscription later (three keep-alives of a stream, at four
            # polls a keep-alive): still one upstream call.
            polls_before = simulator.query_stats()["calls"]
            pings = 0
            async for item in readers[0]:
                pings += isinstance(item, Comment)
                if pings == 3:
                    break
    state = {"data": {"jobUpdates": {"id": job_id, "state": "ANALYSING"}}}
    assert firsts == [state] * 10
    assert polls_before == 1
    assert simulator.query_stats()["calls"] == 1


async def test_a_persisted_subscription_is_told_by_its_document(
    gateway: GatewayServer, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    # urql's persisted exchange with subscriptions over SSE: the text and its hash once, then
    # the hash alone; both accept JSON too, and both are subscriptions.
    [job_id] = simulator.demo_ids()[:1]
    query = f'subscription {{ jobUpdates(id: "{job_id}") {{ id }} }}'
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    seen = []
    for payload in ({"query": query, "extensions": extensions}, {"extensions": extensions}):
        response, events = await operation_over_sse(
            http, gateway.graphql_url, payload, headers={"accept": BOTH}
        )
        seen.append(payloads(response, events))
    event = [("next", {"data": {"jobUpdates": {"id": job_id}}}), ("complete", None)]
    assert seen == [event, event]


# --- what bounds a stream ------------------------------------------------------------------------


def held_job(simulator: SimulatorServer, job_id: str) -> dict[str, Any]:
    """A running job, and a subscription to it that sends one event, then waits."""
    simulator.put_job(job_id, planted(job_id, "Analysing"))
    query = f'subscription {{ jobUpdates(id: "{job_id}", intervalSeconds: 60) {{ id state }} }}'
    return {"query": query}


async def next_event(items: AsyncIterator[Event | Comment]) -> Any:
    """The payload of the next event of a stream being read."""
    async for item in items:
        if isinstance(item, Event):
            return item.json()
    raise AssertionError("The stream ended before its next event.")


async def first_event(response: httpx.Response) -> Event:
    async for item in stream_items(response):
        if isinstance(item, Event):
            return item
    raise AssertionError("The stream ended before its first event.")


async def test_streams_beyond_the_process_cap_get_a_coded_503(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = held_job(simulator, "55e0000000000000000000000000000b")
    headers = {"accept": EVENT_STREAM}
    with start_gateway(sse_max_streams=2) as gateway:
        async with (
            http.stream("POST", gateway.graphql_url, json=payload, headers=headers) as one,
            http.stream("POST", gateway.graphql_url, json=payload, headers=headers) as two,
        ):
            assert (await first_event(one)).event == "next"
            assert (await first_event(two)).event == "next"
            refused = await http.post(gateway.graphql_url, json=payload, headers=headers)
            # Plain HTTP and WebSocket are not streams: still served.
            plain = await http.post(gateway.graphql_url, json={"query": "{ __typename }"})

        # Both streams closed by their clients: the slots are free again.
        async def served() -> bool:
            _, events = await operation_over_sse(
                http, gateway.graphql_url, {"query": "{ __typename }"}
            )
            return [event.event for event in events] == ["next", "complete"]

        await eventually(served, "a stream served once the others closed")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert answer(refused) == {
        "errors": [
            {
                "message": "Expected at most 2 event streams at once on this process, received "
                "one more; try again later, or another replica.",
                "extensions": {"code": "TOO_MANY_STREAMS", "limit": 2},
            }
        ]
    }
    assert plain.json() == {"data": {"__typename": "Query"}}
    assert warnings_and_errors(caplog) == []


async def test_an_idle_stream_carries_keep_alive_comments(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    payload = held_job(simulator, "55e0000000000000000000000000000c")
    items: list[Event | Comment] = []
    with start_gateway(sse_keepalive=0.1) as gateway:
        async with http.stream(
            "POST", gateway.graphql_url, json=payload, headers={"accept": EVENT_STREAM}
        ) as response:
            async for item in stream_items(response):
                items.append(item)
                events = [index for index, seen in enumerate(items) if isinstance(seen, Event)]
                if events and items[events[0] :].count(Comment("ping")) == 3:
                    break
    # The job's one event (pings may come before it while its first poll runs), then nothing
    # but pings: its next poll is a minute away.
    [event] = [item for item in items if isinstance(item, Event)]
    assert event.event == "next"
    assert items[items.index(event) + 1 :] == [Comment("ping")] * 3
    assert set(items) - {event} == {Comment("ping")}


async def test_the_active_streams_are_a_metric_and_a_vanished_client_ends_its_stream(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = held_job(simulator, "55e0000000000000000000000000000d")

    def active() -> float:
        return value(scrape(gateway.url), "mpsgw_subscriptions_active", transport="sse")

    with start_gateway(sse_keepalive=0.1) as gateway:
        async with http.stream(
            "POST", gateway.graphql_url, json=payload, headers={"accept": EVENT_STREAM}
        ) as response:
            await first_event(response)
            during = active()
        # The client closed its connection mid-stream; the gateway notices (its next
        # keep-alive finds nobody) and ends the subscription.
        await eventually(lambda: active() == 0, "the subscription ended")
    assert during == 1
    assert warnings_and_errors(caplog) == []


# --- a client that reads nothing ------------------------------------------------------------------

BIG_JOB = "55e0000000000000000000000000b16e"
FILES = 20_000


@pytest.mark.slow
async def test_a_client_that_stops_reading_is_dropped(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Tens of MB of answer: far beyond what the socket buffers on both sides hold, so that
    # the gateway's writes wait for a client that never reads.
    names = [f"out/{'x' * 200}-{n}.jpg" for n in range(FILES)]
    simulator.put_job(
        BIG_JOB,
        {
            **planted(BIG_JOB, "Success"),
            "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}-{sequenceId}.jpg",
            "Result": success_result(names),
        },
    )
    query = f'{{ job(id: "{BIG_JOB}") {{ result {{ files {{ key url }} }} }} }}'
    request = json.dumps({"query": query}).encode()
    with start_gateway(
        max_page_size=FILES, max_cost=1_000_000, sse_max_streams=1, sse_write_timeout=0.5
    ) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.connect((host, int(port)))
        try:
            silent.sendall(
                b"POST /graphql HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                b"accept: text/event-stream\r\n"
                + f"content-length: {len(request)}\r\n\r\n".encode()
                + request
            )

            # The only stream the process may serve is the silent client's, until it is
            # dropped.
            async def stream_served() -> bool:
                response, events = await operation_over_sse(
                    http, gateway.graphql_url, {"query": "{ __typename }"}
                )
                return response.status_code == 200 and len(events) == 2

            await eventually(stream_served, "a stream served after the silent one was dropped")
            received = await asyncio.to_thread(read_to_the_end, silent)
        finally:
            silent.close()
    # The connection ended before the answer did.
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"event: complete" not in received
    assert warnings_and_errors(caplog) == []
    assert "Dropping an event stream whose client read nothing for 0.5 s" in caplog.text


def read_to_the_end(connection: socket.socket) -> bytes:
    """Everything the socket still delivers, until the peer closed or reset it."""
    connection.settimeout(SAFETY_TIMEOUT)
    chunks = []
    try:
        while chunk := connection.recv(1 << 16):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)
