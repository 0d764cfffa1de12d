"""signedUrl through a real gateway in front of a real simulator: a V4 URL for the right object,
signed with the gateway's key, that the official OSS SDK computes the same, and no secret sent."""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from gateway.model import OssObject
from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET
from tests.api.conftest import GatewayServer, graphql
from tests.oss.official import official_v4_url, query_of
from tests.servers import SimulatorServer

SIGNED_FIELDS = """
    input { bucket endpoint region key signedUrl(expiresInSeconds: 600) }
    output { isTemplate signedUrl }
    result { files { key bucket region url signedUrl(expiresInSeconds: 600) } }
"""


def assert_signed_for(url: str, obj: OssObject, expires: int, before: float, after: float) -> None:
    """`url` is a V4 presigned GET of `obj` by the gateway's key, made between `before` and
    `after`, and its signature is the one the official SDK computes at that x-oss-date."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname) == ("https", f"{obj.bucket}.{obj.endpoint}")
    assert parts.path == "/" + quote(obj.key, safe="/")
    query = query_of(url)
    signed_at = calendar.timegm(time.strptime(query["x-oss-date"], "%Y%m%dT%H%M%SZ"))
    assert int(before) <= signed_at <= after
    assert query["x-oss-signature-version"] == "OSS4-HMAC-SHA256"
    assert query["x-oss-expires"] == str(expires)
    assert query["x-oss-credential"] == (
        f"{SIMULATOR_DEMO_ACCESS_KEY_ID}/{query['x-oss-date'][:8]}/{obj.region}/oss/"
        "aliyun_v4_request"
    )
    assert "x-oss-security-token" not in query
    assert url == official_v4_url(
        obj,
        access_key_id=SIMULATOR_DEMO_ACCESS_KEY_ID,
        access_key_secret=SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        signed_at=signed_at,
        expires=expires,
    )


async def test_a_demo_jobs_files_get_v4_urls_signed_by_the_gateways_key(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    job_id = simulator.demo_ids()[0]
    query = f"query($id: ID!) {{ job(id: $id) {{ {SIGNED_FIELDS} }} }}"
    before = time.time()
    response = await http.post(
        gateway.graphql_url, json={"query": query, "variables": {"id": job_id}}
    )
    after = time.time()

    assert response.status_code == 200
    # Only the AccessKey id may travel: never the secret, in any form.
    assert SIMULATOR_DEMO_ACCESS_KEY_SECRET not in response.text
    assert quote(SIMULATOR_DEMO_ACCESS_KEY_SECRET, safe="") not in response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body
    job = body["data"]["job"]
    files = job["result"]["files"]
    assert [file["key"] for file in files] == [
        "iproduction/test-result.jpg",
        "iproduction/test-origin.jpg",
    ]
    for file in files:
        obj = OssObject(
            bucket=file["bucket"],
            endpoint=f"oss-{file['region']}.aliyuncs.com",
            key=file["key"],
            region=file["region"],
        )
        assert file["signedUrl"].startswith(file["url"] + "?")
        assert_signed_for(file["signedUrl"], obj, 600, before, after)
    source = job["input"]
    assert_signed_for(
        source["signedUrl"],
        OssObject(source["bucket"], source["endpoint"], source["key"], source["region"]),
        600,
        before,
        after,
    )
    # The output is a key template ({source}...), not an object: nothing to sign.
    assert job["output"] == {"isTemplate": True, "signedUrl": None}


async def test_the_default_expiry_is_an_hour(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = await graphql(
        http,
        gateway,
        "query($id: ID!) { job(id: $id) { result { files { signedUrl } } } }",
        {"id": simulator.demo_ids()[0]},
    )
    urls = [file["signedUrl"] for file in body["data"]["job"]["result"]["files"]]
    assert [query_of(url)["x-oss-expires"] for url in urls] == ["3600", "3600"]


async def test_an_expiry_out_of_range_is_a_typed_error_at_that_field_only(
    simulator: SimulatorServer, gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    query = (
        "query($id: ID!, $expires: Int!) { job(id: $id) { id result { files { key "
        "signedUrl(expiresInSeconds: $expires) } } } }"
    )
    job_id = simulator.demo_ids()[0]
    body = await graphql(http, gateway, query, {"id": job_id, "expires": 604801})

    column = query.index("signedUrl") + 1
    error = {
        "message": "Expected expiresInSeconds from 1 to 604800 seconds (7 days), received 604801.",
        "locations": [{"line": 1, "column": column}],
        "extensions": {"code": "INVALID_ARGUMENT", "argument": "expiresInSeconds"},
    }
    assert body == {
        "data": {
            "job": {
                "id": job_id,
                "result": {
                    "files": [
                        {"key": "iproduction/test-result.jpg", "signedUrl": None},
                        {"key": "iproduction/test-origin.jpg", "signedUrl": None},
                    ]
                },
            }
        },
        "errors": [
            {**error, "path": ["job", "result", "files", 0, "signedUrl"]},
            {**error, "path": ["job", "result", "files", 1, "signedUrl"]},
        ],
    }
