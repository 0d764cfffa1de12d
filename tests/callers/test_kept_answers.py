"""Kept answers with callers: a caller is authenticated (and rate-limited) before any kept
answer is looked up, and callers who see different jobs never share one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis

from tests.api.conftest import (  # noqa: F401 (fixtures)
    GatewayServer,
    StartGateway,
    http,
    prefix,
    start_gateway,
)
from tests.api.test_shared_cache import sharing
from tests.callers.test_isolation import (  # noqa: F401 (fixtures)
    ACME_JOB,
    Credentials,
    credentials,
    gateway,
    jobs,
)
from tests.support.gateway import ADMIN_HEADERS
from tests.support.redis import REDIS_URL
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

QUERY = "query($id: ID!) { job(id: $id) { id userData } }"


async def ask(
    http: httpx.AsyncClient,  # noqa: F811
    gateway: GatewayServer,  # noqa: F811
    headers: dict[str, str],
) -> httpx.Response:
    return await http.get(
        gateway.graphql_url,
        params={"query": QUERY, "variables": json.dumps({"id": ACME_JOB})},
        headers=headers,
    )


async def hits(http: httpx.AsyncClient, gateway: GatewayServer) -> int:  # noqa: F811
    response = await http.get(f"{gateway.url}/readyz", headers=ADMIN_HEADERS)
    answers: dict[str, Any] = response.json()["answers"]
    return int(answers["hits"])


async def test_a_kept_answer_is_served_only_to_callers_who_see_the_same_jobs(
    gateway: GatewayServer,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
    credentials: Credentials,  # noqa: F811
) -> None:
    acme = {"x-api-key": credentials.acme_key}
    kept = [await ask(http, gateway, acme) for _ in range(3)]
    assert [r.status_code for r in kept] == [200] * 3
    assert kept[2].json()["data"]["job"]["id"] == ACME_JOB
    assert await hits(http, gateway) == 1
    # Kept for acme's tenant: private to HTTP caches.
    assert kept[2].headers["cache-control"].startswith("private, max-age=")

    # No credential, or a wrong one: 401 as ever, whatever is kept.
    for headers in ({}, {"x-api-key": credentials.acme_key + "x"}):
        refused = await ask(http, gateway, headers)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    # Another tenant asks the same: its own answer (null: not its job), never acme's.
    globex = await ask(http, gateway, credentials.bearer(tenant="globex"))
    assert globex.json() == {"data": {"job": None}}
    # An operator sees the job too, but under its own visibility: a miss, then its own.
    operator = await ask(http, gateway, {"x-api-key": credentials.ops_key})
    assert operator.json()["data"]["job"]["id"] == ACME_JOB
    assert await hits(http, gateway) == 1

    # Another caller of acme's tenant (a token, not the key) shares acme's kept answer.
    same_tenant = await ask(http, gateway, credentials.bearer(tenant="acme"))
    assert same_tenant.content == kept[2].content
    assert await hits(http, gateway) == 2


async def test_a_kept_answer_takes_from_the_tenants_rate(
    start_gateway: StartGateway,  # noqa: F811
    credentials: Credentials,  # noqa: F811
    jobs: None,  # noqa: F811
    http: httpx.AsyncClient,  # noqa: F811
    prefix: str,  # noqa: F811
) -> None:
    # The answer is kept by a gateway without a rate and shared through Redis; a gateway
    # allowing acme one operation in about 1,000 s then answers it from the kept answer once.
    acme = {"x-api-key": credentials.acme_key}
    shared = redis.Redis.from_url(REDIS_URL)
    try:
        with start_gateway(**sharing(prefix, **credentials.settings)) as free:
            for _ in range(2):
                assert (await ask(http, free, acme)).status_code == 200
            await eventually(
                lambda: bool(list(shared.scan_iter(match=f"{prefix}:answer:*"))),
                "the answer shared in Redis",
            )
        limited = sharing(prefix, **credentials.settings, tenant_qps=0.001)
        with start_gateway(**limited) as server:
            answers = [await ask(http, server, acme) for _ in range(3)]
            report = (await http.get(f"{server.url}/readyz", headers=ADMIN_HEADERS)).json()[
                "answers"
            ]
    finally:
        shared.close()
    codes = [(r.json().get("errors") or [{}])[0].get("extensions", {}).get("code") for r in answers]
    assert codes == [None, "RATE_LIMITED", "RATE_LIMITED"]
    # Found in Redis once, then in memory twice, where the rate refused it.
    assert (report["sharedHits"], report["hits"]) == (1, 2)
