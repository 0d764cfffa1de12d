"""GraphiQL's files at /graphiql/<path>: immutable, revalidated by ETag, gzipped on request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.graphiql.assets import Asset, load_assets
from tests.api.conftest import answer

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def asset() -> Asset:
    (graphiql,) = [asset for asset in load_assets() if asset.path.endswith("/graphiql.min.js")]
    return graphiql


@pytest.fixture
async def client(embedded_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    # No Accept-Encoding unless a test asks: httpx would otherwise ask for gzip itself.
    async with httpx.AsyncClient(base_url=embedded_gateway) as client:
        client.headers.pop("accept-encoding")
        yield client


async def test_a_file_is_served_as_is_and_cached_for_a_year(
    client: httpx.AsyncClient, asset: Asset
) -> None:
    response = await client.get(f"/graphiql/{asset.path}")

    assert response.status_code == 200
    assert response.content == asset.content
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["etag"] == f'"{asset.integrity.removeprefix("sha384-")}"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-encoding" not in response.headers


async def test_a_client_that_accepts_gzip_gets_it_under_its_own_etag(
    client: httpx.AsyncClient, asset: Asset
) -> None:
    plain = await client.get(f"/graphiql/{asset.path}")
    response = await client.get(
        f"/graphiql/{asset.path}", headers={"accept-encoding": "br;q=1, gzip;q=0.5"}
    )

    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "accept-encoding"
    assert response.headers["etag"] == plain.headers["etag"].removesuffix('"') + '-gzip"'
    # httpx decodes what the header announces: the bytes under it are the file's.
    assert response.content == asset.content
    assert int(response.headers["content-length"]) < len(asset.content) // 2


@pytest.mark.parametrize("accept_encoding", ["gzip;q=0", "identity", "br, deflate"])
async def test_gzip_refused_or_not_asked_for_is_not_sent(
    client: httpx.AsyncClient, asset: Asset, accept_encoding: str
) -> None:
    response = await client.get(
        f"/graphiql/{asset.path}", headers={"accept-encoding": accept_encoding}
    )

    assert "content-encoding" not in response.headers
    assert response.content == asset.content


async def test_a_cached_copy_is_revalidated_without_its_body(
    client: httpx.AsyncClient, asset: Asset
) -> None:
    etag = (await client.get(f"/graphiql/{asset.path}")).headers["etag"]
    response = await client.get(
        f"/graphiql/{asset.path}", headers={"if-none-match": f'"other", W/{etag}'}
    )

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == IMMUTABLE


async def test_a_changed_copy_is_sent_again(client: httpx.AsyncClient, asset: Asset) -> None:
    response = await client.get(f"/graphiql/{asset.path}", headers={"if-none-match": '"old"'})

    assert response.status_code == 200
    assert response.content == asset.content


async def test_head_answers_the_headers_only(client: httpx.AsyncClient, asset: Asset) -> None:
    response = await client.head(f"/graphiql/{asset.path}")

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(asset.content))


@pytest.mark.parametrize(
    "path", ["graphiql-0.0.1/graphiql.min.js", "assets.json", "%2E%2E%2F__init__.py", "", "vendor"]
)
async def test_anything_else_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"/graphiql/{path}")

    assert response.status_code == 404
    error = {"message": "No GraphiQL file has this path.", "extensions": {"code": "NOT_FOUND"}}
    assert answer(response) == {"errors": [error]}
