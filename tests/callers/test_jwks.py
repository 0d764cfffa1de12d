"""UrlKeySource against a real key set server on 127.0.0.1: cached, fetched again for an unknown
key id (a provider rotating its keys), at most once per `min_refresh`, failures survived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.callers.jwks import UrlKeySource
from gateway.callers.tokens import TokenVerifier
from gateway.errors import Unauthenticated
from tests.jobs.jobfakes import ManualClock
from tests.servers import run_asgi_server

from .issuer import AUDIENCE, ISSUER, Issuer, SigningKey


@dataclass
class KeyServer:
    """What the provider's jwks_uri serves (change `keys` to rotate), and the fetches seen."""

    url: str
    keys: list[dict[str, Any]]
    status: int = 200
    fetches: list[str] = field(default_factory=list)


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    state = KeyServer(url="", keys=[SigningKey.make("k1").jwk()])

    async def jwks(request: Request) -> Response:
        state.fetches.append(request.url.path)
        if state.status != 200:
            return Response("down", status_code=state.status)
        return JSONResponse({"keys": state.keys})

    with run_asgi_server(Starlette(routes=[Route("/jwks", jwks)])) as url:
        state.url = f"{url}/jwks"
        yield state


def source(
    server: KeyServer, clock: ManualClock, *, max_age: float = 3600.0, min_refresh: float = 30.0
) -> UrlKeySource:
    return UrlKeySource(server.url, clock=clock, max_age=max_age, min_refresh=min_refresh)


async def test_the_set_is_fetched_once_and_kept(key_server: KeyServer) -> None:
    keys = source(key_server, ManualClock())
    try:
        assert (await keys.key("k1")) is not None
        assert (await keys.key("k1")) is not None
        assert key_server.fetches == ["/jwks"]
    finally:
        await keys.aclose()


async def test_an_unknown_kid_fetches_again_once_per_min_refresh(key_server: KeyServer) -> None:
    clock = ManualClock()
    keys = source(key_server, clock)
    try:
        assert await keys.key("k1") is not None
        # The provider rotates: k2 appears. The first token naming it makes one fetch...
        clock.now += 30.0
        rotated = SigningKey.make("k2")
        key_server.keys = [*key_server.keys, rotated.jwk()]
        assert await keys.key("k2") is not None
        assert len(key_server.fetches) == 2
        # ...and a flood of made-up kids within min_refresh makes none.
        results = await asyncio.gather(*(keys.key(f"forged-{i}") for i in range(50)))
        assert results == [None] * 50
        clock.now += 29.0
        assert await keys.key("forged-x") is None
        assert len(key_server.fetches) == 2
        # Once min_refresh has passed, one more.
        clock.now += 1.0
        assert await keys.key("forged-y") is None
        assert len(key_server.fetches) == 3
    finally:
        await keys.aclose()


async def test_concurrent_first_lookups_share_one_fetch(key_server: KeyServer) -> None:
    keys = source(key_server, ManualClock(), min_refresh=0.0)
    try:
        found = await asyncio.gather(*(keys.key("k1") for _ in range(20)))
        assert all(key is not None for key in found)
        assert key_server.fetches == ["/jwks"]
    finally:
        await keys.aclose()


async def test_an_old_set_is_fetched_again(key_server: KeyServer) -> None:
    clock = ManualClock()
    keys = source(key_server, clock, max_age=60.0)
    try:
        await keys.key("k1")
        key_server.keys = [SigningKey.make("k9").jwk()]
        clock.now += 60.0
        # Retired keys go with the old set.
        assert await keys.key("k1") is None
        assert await keys.key("k9") is not None
        assert len(key_server.fetches) == 2
    finally:
        await keys.aclose()


async def test_a_failed_fetch_keeps_the_keys_held(
    key_server: KeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    keys = source(key_server, clock, max_age=60.0)
    try:
        await keys.key("k1")
        key_server.status = 503
        clock.now += 60.0
        with caplog.at_level(logging.WARNING, logger="gateway.callers.jwks"):
            assert await keys.key("k1") is not None
        assert len(key_server.fetches) == 2
        assert "Could not fetch the JSON Web Key Set" in caplog.text
        assert "HTTP 200, received 503" in caplog.text
    finally:
        await keys.aclose()


async def test_tokens_verify_against_a_rotated_key_fetched_from_the_url(
    key_server: KeyServer,
) -> None:
    clock = ManualClock()
    issuer = Issuer([SigningKey.make("a")])
    key_server.keys = issuer.jwks()["keys"]
    keys = source(key_server, clock)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, leeway=5.0)
    try:
        assert (await verifier.caller(issuer.token())).tenant == "acme"
        new = SigningKey.make("b", "ES256")
        issuer.keys.append(new)
        key_server.keys = issuer.jwks()["keys"]
        # Too soon after the last fetch: refused now...
        with pytest.raises(Unauthenticated, match="kid"):
            await verifier.caller(issuer.token(new))
        clock.now += 30.0
        # ...accepted once a refetch is allowed.
        assert (await verifier.caller(issuer.token(new))).name == "user-1"
    finally:
        await keys.aclose()
