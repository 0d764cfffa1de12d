"""The response cache on a real gateway: what is kept, what never is, and the HTTP headers.

Each test plants its jobs in the real simulator and reads what the gateway kept from /readyz
(`answers`): a repeat answered from kept bytes counts a hit, and runs nothing (the snapshot
cache's counters, which any execution moves, stay still).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from tests.api.conftest import GatewayServer, StartGateway
from tests.api.test_shared_cache import planted, sharing
from tests.servers import SimulatorServer
from tests.support.gateway import ADMIN_HEADERS
from tests.support.ports import candidate_port
from tests.support.redis import REDIS_URL
from tests.support.waiting import eventually

FINISHED = "query Finished($id: ID!) { job(id: $id) { id state result { code } fetchedAt } }"


async def post(
    http: httpx.AsyncClient, gateway: GatewayServer, query: str, **variables: Any
) -> httpx.Response:
    response = await http.post(gateway.graphql_url, json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response


async def get(
    http: httpx.AsyncClient,
    gateway: GatewayServer,
    query: str | None,
    headers: dict[str, str] | None = None,
    **variables: Any,
) -> httpx.Response:
    params = {"variables": json.dumps(variables)}
    if query is not None:
        params["query"] = query
    return await http.get(gateway.graphql_url, params=params, headers=headers)


async def kept(http: httpx.AsyncClient, gateway: GatewayServer) -> dict[str, Any]:
    response = await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)
    report: dict[str, Any] = response.json()
    return {"fetcher": report["fetcher"], **report["answers"]}


def plant(simulator: SimulatorServer, job_id: str, state: str = "Success") -> str:
    simulator.put_job(job_id, planted(job_id, state))
    return job_id


async def test_a_finished_job_asked_again_is_answered_from_the_kept_bytes(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000001")
    first = await post(http, gateway, FINISHED, id=job_id)  # seen once: not kept yet
    second = await post(http, gateway, FINISHED, id=job_id)  # seen twice: kept
    before = await kept(http, gateway)

    third = await post(http, gateway, FINISHED, id=job_id)

    after = await kept(http, gateway)
    assert first.content == second.content == third.content
    assert third.json()["data"]["job"]["state"] == "SUCCESS"
    assert (before["admitted"], before["hits"], after["hits"]) == (1, 0, 1)
    # Nothing ran: no resolver asked the snapshot cache.
    assert after["fetcher"] == before["fetcher"]
    assert third.headers["cache-control"] == "no-store"  # a POST: no HTTP cache reuses it
    assert third.headers["x-request-id"] != second.headers["x-request-id"]


async def asked_thrice(
    http: httpx.AsyncClient, gateway: GatewayServer, query: str, **variables: Any
) -> list[dict[str, Any]]:
    answers = [(await post(http, gateway, query, **variables)).json() for _ in range(3)]
    stats = await kept(http, gateway)
    assert (stats["admitted"], stats["hits"], stats["entries"]) == (0, 0, 0), stats
    return answers


async def test_a_running_job_is_never_kept_and_its_next_state_is_answered(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000002", "Analysing")
    with start_gateway(cache_running_ttl=0.0) as gateway:
        answers = await asked_thrice(http, gateway, FINISHED, id=job_id)
        simulator.put_job(job_id, planted(job_id, "Success"))
        moved = (await post(http, gateway, FINISHED, id=job_id)).json()
    assert {a["data"]["job"]["state"] for a in answers} == {"ANALYSING"}
    assert moved["data"]["job"]["state"] == "SUCCESS"


async def test_a_job_that_does_not_exist_is_never_kept(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = "a11ce000000000000000000000000003"
    with start_gateway(cache_not_found_ttl=0.0) as gateway:
        answers = await asked_thrice(http, gateway, FINISHED, id=job_id)
        plant(simulator, job_id)
        found = (await post(http, gateway, FINISHED, id=job_id)).json()
    assert {json.dumps(a) for a in answers} == {'{"data": {"job": null}}'}
    assert found["data"]["job"]["state"] == "SUCCESS"


async def test_age_seconds_is_never_kept(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000004")
    answers = await asked_thrice(
        http, gateway, "query($id: ID!) { job(id: $id) { id ageSeconds } }", id=job_id
    )
    assert all(a["data"]["job"]["ageSeconds"] >= 0 for a in answers)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        # One good id and one bad: the good one is served, the answer has an error.
        ('query($id: ID!) { jobs(ids: [$id, "bad id!"]) { id } }', "INVALID_JOB_ID"),
        (
            "query($id: ID!) { job(id: $id) { result { files(first: 100000) { name } } } }",
            "INVALID_ARGUMENT",
        ),
        ("query($id: ID!) { job(id: $id) { nope } }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_an_answer_with_errors_is_never_kept(
    simulator: SimulatorServer,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    query: str,
    code: str,
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000005")
    answers = await asked_thrice(http, gateway, query, id=job_id)
    assert {a["errors"][0]["extensions"]["code"] for a in answers} == {code}


async def test_introspection_is_kept(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    query = "{ __schema { queryType { name } } __typename }"
    bodies = [(await post(http, gateway, query)).content for _ in range(3)]
    stats = await kept(http, gateway)
    assert len(set(bodies)) == 1
    assert (stats["admitted"], stats["hits"]) == (1, 1)


async def test_an_answer_over_the_size_limit_is_made_anew_each_time(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000006")
    with start_gateway(answer_cache_max_answer_bytes=50) as gateway:
        await asked_thrice(http, gateway, FINISHED, id=job_id)
        stats = await kept(http, gateway)
    assert stats["tooLarge"] == 3


def signed_at_and_expiry(url: str) -> float:
    """When a V4 signed URL stops working (seconds since the epoch)."""
    query = parse_qs(urlsplit(url).query)
    signed = time.mktime(time.strptime(query["x-oss-date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
    return signed + int(query["x-oss-expires"][0])


@pytest.mark.slow
async def test_a_signed_url_is_kept_only_while_most_of_its_validity_is_left(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # Kept for a tenth of the 20 s asked (2 s): asked again and again until the kept answer
    # has been replaced twice, every URL served must still have most of its 20 s ahead.
    query = (
        "query($id: ID!) { job(id: $id) { result { files { signedUrl(expiresInSeconds: 20) } } } }"
    )
    job_id = simulator.demo_ids()[0]
    urls: set[str] = set()
    worst = 20.0

    async def replaced_twice() -> bool:
        nonlocal worst
        response = await get(http, gateway, query, id=job_id)
        received = time.time()
        url = response.json()["data"]["job"]["result"]["files"][0]["signedUrl"]
        worst = min(worst, signed_at_and_expiry(url) - received)
        control = response.headers["cache-control"]
        assert control.startswith("public, max-age=")
        assert "immutable" not in control
        assert int(control.removeprefix("public, max-age=")) <= 2
        urls.add(url)
        return len(urls) >= 3

    await eventually(replaced_twice, "the kept signed URL replaced twice", interval=0.05)
    stats = await kept(http, gateway)
    assert stats["hits"] > 0
    # At most 2 s kept, 1 s of the date's rounding: 17 s left; the rest is this machine's time
    # between the gateway's answer and this line.
    assert worst > 14.0, worst


async def test_a_get_answer_of_finished_jobs_is_immutable_and_revalidates_with_304(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce000000000000000000000000007")
    first = await get(http, gateway, FINISHED, id=job_id)
    second = await get(http, gateway, FINISHED, id=job_id)
    etag = second.headers["etag"]

    revalidated = await get(http, gateway, FINISHED, {"if-none-match": f'W/"x", {etag}'}, id=job_id)
    stale_tag = await get(http, gateway, FINISHED, {"if-none-match": '"other"'}, id=job_id)

    assert first.status_code == second.status_code == 200
    assert first.headers["etag"] == etag == revalidated.headers["etag"]
    assert etag == '"' + hashlib.sha256(second.content).hexdigest()[:32] + '"'
    control = second.headers["cache-control"]
    assert control.startswith("public, max-age=")
    assert control.endswith(", immutable")
    assert 86_000 < int(control.split("max-age=")[1].split(",")[0]) <= 86_400
    assert (revalidated.status_code, revalidated.content) == (304, b"")
    assert (stale_tag.status_code, stale_tag.content) == (200, second.content)


async def test_a_get_answer_that_cannot_be_kept_says_no_store(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    running = plant(simulator, "a11ce000000000000000000000000008", "Analysing")
    answers = [
        await get(http, gateway, FINISHED, id=running),
        await get(http, gateway, '{ job(id: "bad id!") { id } }'),
        await get(http, gateway, "{ job(id: "),  # a syntax error
    ]
    assert [a.headers["cache-control"] for a in answers] == ["no-store"] * 3
    assert all("etag" not in a.headers for a in answers)


async def test_a_get_naming_its_document_by_hash_is_answered_like_the_text(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # The hook for persisted queries: the key names a document by the SHA-256 of its text.
    job_id = plant(simulator, "a11ce000000000000000000000000009")
    await get(http, gateway, FINISHED, id=job_id)
    by_text = await get(http, gateway, FINISHED, id=job_id)
    digest = hashlib.sha256(FINISHED.encode()).hexdigest()
    by_hash = await http.get(
        gateway.graphql_url,
        params={
            "variables": json.dumps({"id": job_id}),
            "extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}}),
        },
    )
    assert (by_hash.status_code, by_hash.content) == (200, by_text.content)
    assert by_hash.headers["etag"] == by_text.headers["etag"]


async def test_graphiql_is_not_touched(gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    page = await http.get(gateway.graphql_url, headers={"accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


async def test_gateways_sharing_redis_share_kept_answers(
    simulator: SimulatorServer,
    start_gateway: StartGateway,
    http: httpx.AsyncClient,
    prefix: str,
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000a")
    shared = redis.Redis.from_url(REDIS_URL)
    try:
        with start_gateway(**sharing(prefix)) as a, start_gateway(**sharing(prefix)) as b:
            await post(http, a, FINISHED, id=job_id)
            through_a = await post(http, a, FINISHED, id=job_id)  # kept, and shared
            await eventually(
                lambda: bool(list(shared.scan_iter(match=f"{prefix}:answer:*"))),
                "the answer shared in Redis",
            )
            (key,) = shared.scan_iter(match=f"{prefix}:answer:*")
            assert 86_000_000 < shared.pttl(key) <= 86_400_000

            through_b = await post(http, b, FINISHED, id=job_id)
            stats = await kept(http, b)
    finally:
        shared.close()
    assert through_b.content == through_a.content
    assert (stats["sharedHits"], stats["entries"]) == (1, 1)


async def test_without_redis_answers_are_still_kept_in_memory(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000b")
    nobody = f"redis://127.0.0.1:{candidate_port()}/0"  # nothing listens there
    with start_gateway(redis_url=nobody, redis_timeout=0.2) as gateway:
        bodies = [(await post(http, gateway, FINISHED, id=job_id)).content for _ in range(3)]
        stats = await kept(http, gateway)
        ready = (await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)).json()
    assert len(set(bodies)) == 1
    assert json.loads(bodies[0])["data"]["job"]["state"] == "SUCCESS"
    assert (stats["admitted"], stats["hits"]) == (1, 1)
    assert ready["status"] == "degraded"


async def test_the_same_request_spelled_otherwise_is_the_same_kept_answer(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000c")
    spellings = [
        json.dumps({"query": FINISHED, "variables": {"id": job_id}}),
        json.dumps({"variables": {"id": job_id}, "query": FINISHED}, indent=2),
        json.dumps({"query": FINISHED, "variables": {"id": job_id}, "operationName": None}),
    ]
    bodies = []
    for spelling in [*spellings, *spellings]:
        response = await http.post(
            gateway.graphql_url, content=spelling, headers={"content-type": "application/json"}
        )
        bodies.append(response.content)
    stats = await kept(http, gateway)
    assert len(set(bodies)) == 1
    assert (stats["admitted"], stats["hits"]) == (1, 4)


async def test_a_request_over_64_kib_is_never_kept(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    long = "{ __typename }\n#" + "x" * 65_536
    answers = await asked_thrice(http, gateway, long)
    assert answers == [{"data": {"__typename": "Query"}}] * 3


async def test_a_hash_is_refused_as_the_view_refuses_it_even_when_its_answer_is_kept(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000d")
    digest = hashlib.sha256(FINISHED.encode()).hexdigest()

    def extensions(sha: str) -> str:
        return json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha}})

    variables = json.dumps({"id": job_id})
    with start_gateway(apq=False) as gateway:
        for _ in range(3):
            await get(http, gateway, FINISHED, id=job_id)  # kept, then answered from it
        by_hash = await http.get(
            gateway.graphql_url, params={"variables": variables, "extensions": extensions(digest)}
        )
        mismatched = await http.get(
            gateway.graphql_url,
            params={"query": FINISHED, "variables": variables, "extensions": extensions("0" * 64)},
        )
        stats = await kept(http, gateway)
    assert by_hash.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_SUPPORTED"
    assert mismatched.status_code == 400
    assert mismatched.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
    assert stats["hits"] == 1


async def test_an_event_stream_client_gets_its_stream_whatever_is_kept(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000e")
    for _ in range(2):
        await post(http, gateway, FINISHED, id=job_id)  # kept
    body = {"query": FINISHED, "variables": {"id": job_id}}
    streamed = await http.post(
        gateway.graphql_url, json=body, headers={"accept": "text/event-stream"}
    )
    both = await http.post(
        gateway.graphql_url,
        json=body,
        headers={"accept": "text/event-stream, application/graphql-response+json"},
    )
    stats = await kept(http, gateway)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "event: next" in streamed.text
    # A client that takes either gets JSON of its own media type (another key: not a hit).
    assert both.headers["content-type"] == "application/graphql-response+json"
    assert both.json()["data"]["job"]["id"] == job_id
    assert (stats["admitted"], stats["hits"]) == (1, 0)  # the stream was neither kept nor a hit


async def test_answers_of_another_media_type_are_other_answers(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = plant(simulator, "a11ce00000000000000000000000000f")
    for _ in range(3):
        await post(http, gateway, FINISHED, id=job_id)  # kept as application/json
    body = {"query": FINISHED, "variables": {"id": job_id}}
    newer = await http.post(
        gateway.graphql_url,
        json=body,
        headers={"accept": "application/graphql-response+json"},
    )
    stats = await kept(http, gateway)
    assert newer.headers["content-type"].startswith("application/graphql-response+json")
    assert newer.json()["data"]["job"]["id"] == job_id
    assert stats["hits"] == 1  # the third POST only
