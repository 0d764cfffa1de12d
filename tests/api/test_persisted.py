"""Persisted queries on a real gateway: automatic persisted queries (Apollo's protocol) and
trusted documents, over HTTP POST, HTTP GET and WebSocket subscribe payloads, and whatever a
client puts in `extensions.persistedQuery`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.observer import PERSISTED_OUTCOMES
from gateway.app import create_app
from gateway.persisted import ManifestError
from gateway.persisted.registrations import KEY_OVERHEAD
from gateway.settings import GatewaySettings
from tests.api.conftest import GatewayServer, StartGateway, answer, gateway_settings
from tests.api.test_websocket import close_frame, operation, socket_to
from tests.observe.scrape import scrape, value
from tests.servers import SimulatorServer
from tests.support.gateway import gateway_environment

QUERY = "query Job($id: ID!) { job(id: $id) { id state } }"
OTHER = "query Other($id: ID!) { job(id: $id) { id functionName } }"
SUBSCRIPTION = "subscription Follow($id: ID!) { jobUpdates(id: $id) { id isFinished } }"

NOT_FOUND = {
    "message": "PersistedQueryNotFound",
    "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
}
NOT_SUPPORTED = {
    "message": "PersistedQueryNotSupported",
    "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"},
}
MISMATCH = {
    "message": "Expected extensions.persistedQuery.sha256Hash to be the SHA-256 of the query "
    "sent with it, received another hash.",
    "extensions": {"code": "PERSISTED_QUERY_HASH_MISMATCH"},
}
REQUIRED = {
    "message": "Expected a document of this gateway's trusted documents (send its hash in "
    "extensions.persistedQuery), received one that is not.",
    "extensions": {"code": "PERSISTED_QUERY_REQUIRED"},
}
NOT_IN_LIST = {
    "message": "Expected the hash of one of this gateway's trusted documents in "
    "extensions.persistedQuery.sha256Hash, received one it does not hold.",
    "extensions": {"code": "PERSISTED_QUERY_NOT_IN_LIST"},
}
UNCACHED = "private, no-cache, must-revalidate"


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}


async def post(
    http: httpx.AsyncClient, gateway: GatewayServer, body: dict[str, Any]
) -> httpx.Response:
    return await http.post(gateway.graphql_url, json=body)


async def get(
    http: httpx.AsyncClient, gateway: GatewayServer, params: dict[str, str], **headers: str
) -> httpx.Response:
    return await http.get(gateway.graphql_url, params=params, headers=headers)


def hashed_get(document: str, variables: dict[str, Any]) -> dict[str, str]:
    """The parameters Apollo Client's persisted query link sends with `useGETForHashedQueries`."""
    return {
        "extensions": json.dumps(persisted(document)),
        "variables": json.dumps(variables),
    }


def job_of(simulator: SimulatorServer) -> tuple[str, dict[str, Any]]:
    job_id = simulator.demo_ids()[0]
    return job_id, {"data": {"job": {"id": job_id, "state": "SUCCESS"}}}


@pytest.fixture
def job(simulator: SimulatorServer) -> tuple[str, dict[str, Any]]:
    return job_of(simulator)


# --- automatic persisted queries ------------------------------------------------------------


async def test_the_apollo_flow_a_hash_then_hash_and_text_then_the_hash_alone(
    http: httpx.AsyncClient, gateway: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}

    unknown = await post(http, gateway, hashed)
    assert unknown.status_code == 200
    assert unknown.headers["cache-control"] == UNCACHED
    assert answer(unknown) == {"errors": [NOT_FOUND]}

    registered = await post(http, gateway, {**hashed, "query": QUERY})
    assert (registered.status_code, answer(registered)) == (200, expected)

    known = await post(http, gateway, hashed)
    assert (known.status_code, answer(known)) == (200, expected)


async def test_a_hashed_get_runs_a_registered_query_with_its_variables(
    http: httpx.AsyncClient, gateway: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    params = hashed_get(QUERY, {"id": job_id})
    # curl's Accept (*/*): the GraphiQL page is for a browser's GET without extensions only.
    unknown = await get(http, gateway, params, accept="*/*")
    assert (unknown.status_code, answer(unknown)) == (200, {"errors": [NOT_FOUND]})
    assert unknown.headers["cache-control"] == UNCACHED

    registered = await get(http, gateway, {**params, "query": QUERY})
    assert (registered.status_code, answer(registered)) == (200, expected)

    for params_now in (params, {**params, "operationName": "Job"}, {**params, "query": ""}):
        known = await get(http, gateway, params_now, accept="*/*")
        assert (known.status_code, answer(known)) == (200, expected)
        assert known.headers["content-type"].startswith("application/json")


async def test_hashes_are_read_in_either_case(
    http: httpx.AsyncClient, gateway: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    await post(
        http, gateway, {"query": QUERY, "variables": {"id": job_id}, "extensions": persisted(QUERY)}
    )
    upper = {"persistedQuery": {"version": 1, "sha256Hash": sha256(QUERY).upper()}}
    response = await post(http, gateway, {"variables": {"id": job_id}, "extensions": upper})
    assert answer(response) == expected


async def test_text_with_another_documents_hash_is_refused_and_not_registered(
    http: httpx.AsyncClient, gateway: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, _ = job
    lying = {"query": OTHER, "variables": {"id": job_id}, "extensions": persisted(QUERY)}
    response = await post(http, gateway, lying)
    assert (response.status_code, answer(response)) == (400, {"errors": [MISMATCH]})
    # The hash still names nothing: the other document was not stored under it.
    hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
    assert answer(await post(http, gateway, hashed)) == {"errors": [NOT_FOUND]}


async def test_a_document_over_the_size_limit_runs_but_is_not_registered(
    http: httpx.AsyncClient, start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id, expected = job_of(simulator)
    with start_gateway(apq_max_document_bytes=len(QUERY) - 1) as gateway:
        response = await post(
            http,
            gateway,
            {"query": QUERY, "variables": {"id": job_id}, "extensions": persisted(QUERY)},
        )
        assert answer(response) == expected
        hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
        assert answer(await post(http, gateway, hashed)) == {"errors": [NOT_FOUND]}


async def test_a_document_over_the_token_limit_is_a_syntax_error_and_not_registered(
    http: httpx.AsyncClient, start_gateway: StartGateway
) -> None:
    with start_gateway(max_tokens=10) as gateway:
        response = await post(http, gateway, {"query": QUERY, "extensions": persisted(QUERY)})
        body = answer(response)
        assert [error["extensions"]["code"] for error in body["errors"]] == ["GRAPHQL_PARSE_FAILED"]
        hashed = {"extensions": persisted(QUERY)}
        assert answer(await post(http, gateway, hashed)) == {"errors": [NOT_FOUND]}


async def test_turned_off_a_hash_is_not_supported_and_text_still_runs(
    http: httpx.AsyncClient, start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id, expected = job_of(simulator)
    with start_gateway(apq=False) as gateway:
        for body in (
            {"variables": {"id": job_id}, "extensions": persisted(QUERY)},
            {"query": QUERY, "variables": {"id": job_id}, "extensions": persisted(QUERY)},
        ):
            response = await post(http, gateway, body)
            assert (response.status_code, answer(response)) == (200, {"errors": [NOT_SUPPORTED]})
            assert response.headers["cache-control"] == UNCACHED
        plain = await post(http, gateway, {"query": QUERY, "variables": {"id": job_id}})
        assert answer(plain) == expected


async def test_registrations_over_the_rate_run_unregistered_and_every_outcome_is_counted(
    http: httpx.AsyncClient, start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id, expected = job_of(simulator)
    # One registration, then one a day: the second document is over the rate.
    with start_gateway(apq_registration_burst=1, apq_registrations_per_second=1e-5) as gateway:
        hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
        other = {"variables": {"id": job_id}, "extensions": persisted(OTHER)}
        assert answer(await post(http, gateway, hashed)) == {"errors": [NOT_FOUND]}
        assert answer(await post(http, gateway, {**hashed, "query": QUERY})) == expected
        assert answer(await post(http, gateway, hashed)) == expected
        over = await post(http, gateway, {**other, "query": OTHER})
        assert answer(over)["data"]["job"]["id"] == job_id  # it ran
        assert answer(await post(http, gateway, other)) == {"errors": [NOT_FOUND]}
        lying = await post(http, gateway, {**hashed, "query": OTHER})
        assert lying.status_code == 400

        text = scrape(gateway.url)

    counted = {
        outcome: value(text, "mpsgw_persisted_queries_total", outcome=outcome)
        for outcome in PERSISTED_OUTCOMES
    }
    assert counted == {
        "hit": 1,
        "miss": 2,
        "registered": 1,
        "not_registered_rate_limited": 1,
        "not_registered_bytes_limited": 0,
        "not_registered_invalid": 0,
        "refused": 1,
    }
    requests = {
        (kind, outcome): value(
            text, "mpsgw_graphql_requests_total", operation_type=kind, outcome=outcome
        )
        for kind in ("query", "none")
        for outcome in ("ok", "client_error", "error")
    }
    # The two misses and the 400 are operations answered before any could run, each counted
    # once (the 400 not again as a refused HTTP request).
    assert requests == {
        ("query", "ok"): 3,
        ("query", "client_error"): 0,
        ("query", "error"): 0,
        ("none", "ok"): 0,
        ("none", "client_error"): 3,
        ("none", "error"): 0,
    }


async def test_registrations_over_the_bytes_per_ttl_run_unregistered(
    http: httpx.AsyncClient, start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id, expected = job_of(simulator)
    room = len(QUERY) + KEY_OVERHEAD  # QUERY fits, and nothing after it for a day
    with start_gateway(apq_registered_bytes_per_ttl=room) as gateway:
        hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
        other = {"variables": {"id": job_id}, "extensions": persisted(OTHER)}
        assert answer(await post(http, gateway, {**hashed, "query": QUERY})) == expected
        assert answer(await post(http, gateway, {**other, "query": OTHER}))["data"]["job"]
        assert answer(await post(http, gateway, hashed)) == expected
        assert answer(await post(http, gateway, other)) == {"errors": [NOT_FOUND]}
        text = scrape(gateway.url)
    assert value(text, "mpsgw_persisted_queries_total", outcome="registered") == 1
    assert value(text, "mpsgw_persisted_queries_total", outcome="not_registered_bytes_limited") == 1


async def test_a_miss_over_websocket_is_counted_too(
    start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id, _ = job_of(simulator)
    with start_gateway() as gateway:
        async with socket_to(gateway) as socket:
            payload = {"variables": {"id": job_id}, "extensions": persisted(SUBSCRIPTION)}
            messages = await operation(socket, payload)
            assert [message["type"] for message in messages] == ["error"]
        text = scrape(gateway.url)
    assert value(text, "mpsgw_persisted_queries_total", outcome="miss") == 1
    assert (
        value(text, "mpsgw_graphql_requests_total", operation_type="none", outcome="client_error")
        == 1
    )


def test_the_setting_reads_on_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_APQ", "off")
    assert GatewaySettings().apq is False
    monkeypatch.setenv("GATEWAY_APQ", "on")
    assert GatewaySettings().apq is True


PQ = "Expected extensions.persistedQuery"
ZEROS = "0" * 64
GARBAGE = [
    ("a string", f"{PQ} to be an object, received a string."),
    (5, f"{PQ} to be an object, received a number."),
    ([1], f"{PQ} to be an object, received an array."),
    ({"sha256Hash": ZEROS}, f"{PQ}.version 1, received null."),
    ({"version": 2, "sha256Hash": ZEROS}, f"{PQ}.version 1, received 2."),
    ({"version": "1", "sha256Hash": ZEROS}, f"{PQ}.version 1, received a string."),
    ({"version": True, "sha256Hash": ZEROS}, f"{PQ}.version 1, received a boolean."),
    ({"version": 1}, f"{PQ}.sha256Hash to be a string, received null."),
    ({"version": 1, "sha256Hash": 7}, f"{PQ}.sha256Hash to be a string, received a number."),
    *(
        (
            {"version": 1, "sha256Hash": text},
            f"{PQ}.sha256Hash to be 64 hexadecimal digits (a SHA-256), received a string of "
            f"{len(text)} characters that is not.",
        )
        for text in ("0" * 63, "0" * 65, "g" * 64, "", "0" * 400_000)
    ),
]


@pytest.mark.parametrize(("value", "message"), GARBAGE)
async def test_garbage_in_persisted_query_is_a_coded_400(
    http: httpx.AsyncClient, gateway: GatewayServer, value: object, message: str
) -> None:
    expected = {"errors": [{"message": message, "extensions": {"code": "PERSISTED_QUERY_INVALID"}}]}
    extensions = {"persistedQuery": value}
    responses = [
        await post(http, gateway, {"query": QUERY, "extensions": extensions}),
        await post(http, gateway, {"extensions": extensions}),
    ]
    if len(json.dumps(extensions)) < 30_000:  # what fits in a URL
        responses.append(
            await get(http, gateway, {"extensions": json.dumps(extensions)}, accept="*/*")
        )
    for response in responses:
        assert (response.status_code, answer(response)) == (400, expected)


@pytest.mark.parametrize("extensions", ["[1]", "5", '"x"', "{", "null"])
async def test_extensions_that_are_no_object_in_a_get_are_a_coded_400(
    http: httpx.AsyncClient, gateway: GatewayServer, extensions: str
) -> None:
    response = await get(http, gateway, {"extensions": extensions}, accept="application/json")
    assert response.status_code == 400
    assert answer(response)["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_persisted_mutation_over_get_is_refused_as_its_text_is(
    http: httpx.AsyncClient, gateway: GatewayServer
) -> None:
    # GET runs no mutation: naming the document by hash changes nothing to that.
    mutation = "mutation Change { change }"
    await post(http, gateway, {"query": mutation, "extensions": persisted(mutation)})
    as_text = await get(http, gateway, {"query": mutation})
    by_hash = await get(http, gateway, hashed_get(mutation, {}), accept="*/*")
    assert as_text.status_code in (400, 405)
    assert (by_hash.status_code, answer(by_hash)) == (as_text.status_code, answer(as_text))


# --- WebSocket ------------------------------------------------------------------------------


async def test_a_subscribe_names_its_document_by_hash(
    http: httpx.AsyncClient, gateway: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    hashed = {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
    async with socket_to(gateway) as socket:
        assert await operation(socket, hashed, id="a") == [
            {"id": "a", "type": "error", "payload": [NOT_FOUND]}
        ]
        # Registered over WebSocket, as over HTTP: text and hash, then the hash alone.
        assert await operation(socket, {**hashed, "query": QUERY}, id="b") == [
            {"id": "b", "type": "next", "payload": expected},
            {"id": "b", "type": "complete"},
        ]
        assert await operation(socket, hashed, id="c") == [
            {"id": "c", "type": "next", "payload": expected},
            {"id": "c", "type": "complete"},
        ]
        assert await operation(socket, {**hashed, "query": OTHER}, id="d") == [
            {"id": "d", "type": "error", "payload": [MISMATCH]}
        ]
        bad = {"extensions": {"persistedQuery": {"version": 3, "sha256Hash": "0" * 64}}}
        assert await operation(socket, bad, id="e") == [
            {
                "id": "e",
                "type": "error",
                "payload": [
                    {
                        "message": "Expected extensions.persistedQuery.version 1, received 3.",
                        "extensions": {"code": "PERSISTED_QUERY_INVALID"},
                    }
                ],
            }
        ]
    # A document registered over HTTP is known over WebSocket too, and the socket stays open
    # after each refusal.
    sub = {"variables": {"id": job_id}, "extensions": persisted(SUBSCRIPTION)}
    await post(http, gateway, {**sub, "query": SUBSCRIPTION})
    async with socket_to(gateway) as socket:
        messages = await operation(socket, sub, id="s")
        finished = {"data": {"jobUpdates": {"id": job_id, "isFinished": True}}}
        assert messages[-2:] == [
            {"id": "s", "type": "next", "payload": finished},
            {"id": "s", "type": "complete"},
        ]


async def test_a_subscribe_with_neither_query_nor_hash_still_closes_with_4400(
    gateway: GatewayServer,
) -> None:
    async with socket_to(gateway) as socket:
        await socket.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"extensions": {}}})
        )
        frame = await close_frame(socket)
    assert frame.code == 4400
    assert frame.reason == "Expected the subscribe payload's query to be a string, received null."


# --- trusted documents ----------------------------------------------------------------------


def apollo_manifest(*documents: str) -> dict[str, Any]:
    return {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256(document), "body": document, "name": "Op", "type": "query"}
            for document in documents
        ],
    }


@pytest.fixture(params=["apollo", "map"])
def manifest(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    documents = (QUERY, SUBSCRIPTION)
    if request.param == "apollo":
        content: object = apollo_manifest(*documents)
    else:
        content = {sha256(document): document for document in documents}
    path.write_text(json.dumps(content))
    return path


@pytest.fixture
def trusted(start_gateway: StartGateway, manifest: Path) -> Iterator[GatewayServer]:
    with start_gateway(trusted_documents=manifest) as gateway:
        yield gateway


async def test_trusted_documents_run_by_hash_over_post_and_get(
    http: httpx.AsyncClient, trusted: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    by_post = await post(
        http, trusted, {"variables": {"id": job_id}, "extensions": persisted(QUERY)}
    )
    by_get = await get(http, trusted, hashed_get(QUERY, {"id": job_id}), accept="*/*")
    with_text = await post(
        http, trusted, {"query": QUERY, "variables": {"id": job_id}, "extensions": persisted(QUERY)}
    )
    # The text of a trusted document runs too: it is the same document.
    text_only = await post(http, trusted, {"query": QUERY, "variables": {"id": job_id}})
    for response in (by_post, by_get, with_text, text_only):
        assert (response.status_code, answer(response)) == (200, expected)


async def test_trusted_mode_refuses_every_other_document(
    http: httpx.AsyncClient, trusted: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, _ = job
    variables = {"id": job_id}
    cases: list[tuple[dict[str, Any], int, dict[str, Any]]] = [
        ({"query": OTHER, "variables": variables}, 403, REQUIRED),
        ({"query": OTHER, "variables": variables, "extensions": persisted(OTHER)}, 403, REQUIRED),
        ({"variables": variables, "extensions": persisted(OTHER)}, 404, NOT_IN_LIST),
        ({"query": OTHER, "extensions": persisted(QUERY)}, 400, MISMATCH),
        ({"query": "{ __schema { types { name } } }"}, 403, REQUIRED),
    ]
    for body, status, error in cases:
        response = await post(http, trusted, body)
        assert (response.status_code, answer(response)) == (status, {"errors": [error]}), body
        assert response.headers["cache-control"] == UNCACHED
    by_get = await get(http, trusted, {"query": OTHER, "variables": json.dumps(variables)})
    assert (by_get.status_code, answer(by_get)) == (403, {"errors": [REQUIRED]})
    # Nothing was registered on the way: the other document's hash is still refused.
    again = await post(http, trusted, {"variables": variables, "extensions": persisted(OTHER)})
    assert (again.status_code, answer(again)) == (404, {"errors": [NOT_IN_LIST]})


async def test_trusted_mode_over_websocket(
    trusted: GatewayServer, job: tuple[str, dict[str, Any]]
) -> None:
    job_id, expected = job
    variables = {"id": job_id}
    async with socket_to(trusted) as socket:
        assert await operation(socket, {"query": OTHER, "variables": variables}, id="1") == [
            {"id": "1", "type": "error", "payload": [REQUIRED]}
        ]
        unknown = {"variables": variables, "extensions": persisted(OTHER)}
        assert await operation(socket, unknown, id="2") == [
            {"id": "2", "type": "error", "payload": [NOT_IN_LIST]}
        ]
        known = {"variables": variables, "extensions": persisted(QUERY)}
        assert await operation(socket, known, id="3") == [
            {"id": "3", "type": "next", "payload": expected},
            {"id": "3", "type": "complete"},
        ]
        follow = {"variables": variables, "extensions": persisted(SUBSCRIPTION)}
        messages = await operation(socket, follow, id="4")
        assert messages[-1] == {"id": "4", "type": "complete"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "to be JSON"),
        ("[]", "to be Apollo's persisted-query manifest"),
        (json.dumps({"abc": QUERY}), "to be a SHA-256 in hex (64 digits), received 'abc'"),
        (json.dumps({"0" * 64: QUERY}), "to be the SHA-256 of its document"),
        (json.dumps({sha256(QUERY): 5}), "Expected a document (a non-empty string)"),
        (json.dumps({**apollo_manifest(QUERY), "version": 2}), "received version 2"),
        (json.dumps({"format": "apollo-persisted-query-manifest", "operations": {}}), "operations"),
    ],
)
def test_a_bad_manifest_stops_the_gateway_at_start(
    simulator: SimulatorServer, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app(gateway_settings(simulator, trusted_documents=path))


def test_a_missing_manifest_stops_the_gateway_at_start(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError, match="readable UTF-8 file"):
        create_app(gateway_settings(simulator, trusted_documents=tmp_path / "nowhere.json"))


@pytest.mark.slow
def test_serve_with_a_bad_manifest_exits_with_a_sentence_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"0" * 64: QUERY}))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        env=gateway_environment({"GATEWAY_TRUSTED_DOCUMENTS": str(path)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "to be the SHA-256 of its document" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
