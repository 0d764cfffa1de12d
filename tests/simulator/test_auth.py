"""Authentication: signature V1 and V3, timestamps, nonces, and the errors the cloud gives."""

from __future__ import annotations

import functools
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Generator
from types import SimpleNamespace
from urllib.parse import parse_qsl

import httpx
import pytest
from alibabacloud_openapi_util.client import Client as OfficialUtil
from starlette.applications import Starlette
from starlette.datastructures import Headers

from gateway.mps.signing import RpcSignatureV1, sign, utc_timestamp
from gateway.simulator import DOC_EXAMPLE_JOB_ID
from gateway.simulator.auth import Authenticator, parse_timestamp
from gateway.simulator.errors import ApiError
from tests.simulator.conftest import (
    AK,
    SECRET,
    VERSION,
    ManualClock,
    query_params,
    simulator_of,
)

ERROR_KEYS = ["RequestId", "HostId", "Code", "Message", "Recommend"]


def skewed(clock: ManualClock, skew: float) -> float:
    return clock() + skew


def asgi_client(app: Starlette, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://simulator", auth=auth
    )


def v1_params(
    method: str, params: dict[str, str], now: float, *, secret: str = SECRET, **common: str
) -> dict[str, str]:
    """`params` plus the V1 common parameters, signed (`common` overrides any of them)."""
    signed = {
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": f"nonce-{now}-{sorted(params.items())}",
        "Timestamp": utc_timestamp(now),
        **params,
        **common,
    }
    return {**signed, "Signature": sign(method, signed, secret)}


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    body: dict[str, str] = response.json()
    assert list(body) == ERROR_KEYS
    assert body["Code"] == code
    assert body["HostId"] == "mts.aliyuncs.com"
    assert code in body["Recommend"]
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    return body


# --- V1 over httpx with the gateway's own signer -------------------------------------------------


async def test_v1_get_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    body = response.json()
    assert body["JobId"] == DOC_EXAMPLE_JOB_ID
    assert body["State"] == "Success"


async def test_v1_post_with_query_string(client: httpx.AsyncClient) -> None:
    response = await client.post("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert response.status_code == 200
    assert response.json()["FunctionName"] == "ImageCartoonize"


async def test_v1_post_with_form_body(client: httpx.AsyncClient) -> None:
    # The operation parameters travel in the body; the signer covers them there.
    response = await client.post("/", data=query_params(DOC_EXAMPLE_JOB_ID))
    assert response.status_code == 200
    assert response.json()["JobId"] == DOC_EXAMPLE_JOB_ID


@pytest.mark.parametrize("value", ["json", "Json", "JSON"])
async def test_v1_format_json_in_any_case(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID, Format=value))
    assert response.json()["JobId"] == DOC_EXAMPLE_JOB_ID


@pytest.mark.parametrize("format_value", ["XML", "xml", None])
async def test_v1_xml_is_the_default(client: httpx.AsyncClient, format_value: str | None) -> None:
    params = query_params(DOC_EXAMPLE_JOB_ID)
    if format_value is None:
        del params["Format"]
    else:
        params["Format"] = format_value
    response = await client.get("/", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml;charset=utf-8"
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(response.content)
    assert root.tag == "QueryIProductionJobResponse"
    fields = {child.tag: child.text for child in root}
    assert list(fields)[:3] == ["RequestId", "JobId", "FunctionName"]
    assert fields["JobId"] == DOC_EXAMPLE_JOB_ID
    assert fields["JobParams"] == '{mode:"gif"}'
    assert (fields["Result"] or "").startswith('{"Code":"Success"')


async def test_v1_xml_error_shape(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app, RpcSignatureV1("LTAIunknownKey", SECRET, clock=clock)) as client:
        params = query_params(DOC_EXAMPLE_JOB_ID)
        del params["Format"]
        response = await client.get("/", params=params)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/xml;charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == "Error"
    assert [child.tag for child in root] == ERROR_KEYS
    assert root.findtext("Code") == "InvalidAccessKeyId.NotFound"
    assert root.findtext("Message") == "Specified access key is not found."


async def test_unknown_access_key(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app, RpcSignatureV1("LTAIunknownKey", SECRET, clock=clock)) as client:
        response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert_json_error(response, 404, "InvalidAccessKeyId.NotFound")


async def test_wrong_secret_tells_the_server_string_to_sign(
    app: Starlette, clock: ManualClock
) -> None:
    async with asgi_client(app, RpcSignatureV1(AK, "wrong", clock=clock, nonce=lambda: "n1")) as c:
        response = await c.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    body = assert_json_error(response, 400, "SignatureDoesNotMatch")
    prefix = "Specified signature is not matched with our calculation. server string to sign is:"
    assert body["Message"].startswith(prefix)
    server_sts = body["Message"].removeprefix(prefix)
    # The same StringToSign the official SDK function would sign (so a client can compare).
    assert server_sts.startswith("GET&%2F&AccessKeyId%3D" + AK)
    assert "SignatureNonce%3Dn1" in server_sts


async def test_a_rejected_signature_does_not_burn_the_nonce(
    app: Starlette, clock: ManualClock
) -> None:
    params = query_params(DOC_EXAMPLE_JOB_ID)
    async with asgi_client(app, RpcSignatureV1(AK, "wrong", clock=clock, nonce=lambda: "n")) as c:
        assert (await c.get("/", params=params)).status_code == 400
    async with asgi_client(app, RpcSignatureV1(AK, SECRET, clock=clock, nonce=lambda: "n")) as c:
        assert (await c.get("/", params=params)).status_code == 200


async def test_signed_method_matters(app: Starlette, clock: ManualClock) -> None:
    # Signed for GET, sent as POST: V1 signs the real HTTP method.
    params = v1_params("GET", query_params(DOC_EXAMPLE_JOB_ID), clock())
    async with asgi_client(app) as client:
        response = await client.post("/", params=params)
    assert_json_error(response, 400, "SignatureDoesNotMatch")


async def test_expired_timestamp(app: Starlette, clock: ManualClock) -> None:
    stale = RpcSignatureV1(AK, SECRET, clock=lambda: clock() - 15 * 60 - 1)
    async with asgi_client(app, stale) as client:
        response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    body = assert_json_error(response, 400, "InvalidTimeStamp.Expired")
    assert body["Message"] == "Specified time stamp or date value is expired."


async def test_timestamp_within_fifteen_minutes_is_fine(app: Starlette, clock: ManualClock) -> None:
    for skew in (-15 * 60, 15 * 60):
        auth = RpcSignatureV1(AK, SECRET, clock=functools.partial(skewed, clock, skew))
        async with asgi_client(app, auth) as client:
            response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
        assert response.status_code == 200


@pytest.mark.parametrize(
    "timestamp", ["2025-01-01 00:00:00", "1735689600", "yesterday", "2025-13-01T00:00:00Z"]
)
async def test_malformed_timestamp(app: Starlette, clock: ManualClock, timestamp: str) -> None:
    params = v1_params("GET", query_params(DOC_EXAMPLE_JOB_ID), clock(), Timestamp=timestamp)
    async with asgi_client(app) as client:
        response = await client.get("/", params=params)
    assert_json_error(response, 400, "InvalidTimeStamp.Format")


def test_timestamp_formats() -> None:
    assert parse_timestamp("2016-02-23T12:46:24Z") == 1456231584.0
    assert parse_timestamp("2016-02-23T12:46:24.250Z") == 1456231584.0


async def test_reused_nonce(app: Starlette, clock: ManualClock) -> None:
    auth = RpcSignatureV1(AK, SECRET, clock=clock, nonce=lambda: "always-the-same")
    async with asgi_client(app, auth) as client:
        first = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
        clock.advance(14 * 60)
        second = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
        clock.advance(61)  # 15 min after the first use: it is forgotten
        third = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert first.status_code == 200
    body = assert_json_error(second, 400, "SignatureNonceUsed")
    assert body["Message"] == "Specified signature nonce was used already."
    assert third.status_code == 200


def test_nonce_memory_is_pruned() -> None:
    auth = Authenticator({"ak": "secret"})
    for index in range(1000):
        assert auth.nonces.use("ak", f"n{index}", now=index * 1.0)
    # Only the nonces of the last 15 minutes (900 s) are kept.
    assert len(auth.nonces) == 900
    assert not auth.nonces.use("ak", "n999", now=1000.0)
    assert auth.nonces.use("ak", "n0", now=1000.0)
    # Nonces are per access key.
    assert auth.nonces.use("other", "n999", now=1000.0)


@pytest.mark.parametrize(
    "missing",
    [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ],
)
async def test_missing_common_parameter(app: Starlette, clock: ManualClock, missing: str) -> None:
    params = v1_params("GET", query_params(DOC_EXAMPLE_JOB_ID), clock())
    del params[missing]
    async with asgi_client(app) as client:
        response = await client.get("/", params=params)
    body = assert_json_error(response, 400, f"Missing{missing}")
    assert body["Message"] == f"{missing} is mandatory for this action."


async def test_signature_method_and_version(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app) as client:
        for common, code in (
            ({"SignatureMethod": "HMAC-SHA256"}, "InvalidSignatureMethod"),
            ({"SignatureVersion": "2.0"}, "IncompleteSignature"),
        ):
            params = v1_params("GET", query_params(DOC_EXAMPLE_JOB_ID), clock(), **common)
            assert_json_error(await client.get("/", params=params), 400, code)
        # The doc example spells it `Hmac-SHA1`: accepted.
        params = v1_params(
            "GET", query_params(DOC_EXAMPLE_JOB_ID), clock(), SignatureMethod="Hmac-SHA1"
        )
        assert (await client.get("/", params=params)).status_code == 200


async def test_security_token_is_accepted_and_signed(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app) as client:
        params = v1_params(
            "GET", query_params(DOC_EXAMPLE_JOB_ID), clock(), SecurityToken="any-sts-token"
        )
        assert (await client.get("/", params=params)).status_code == 200
        # A token swapped after signing breaks the signature.
        params = v1_params(
            "GET", query_params(DOC_EXAMPLE_JOB_ID), clock() + 1, SecurityToken="token-a"
        )
        params["SecurityToken"] = "token-b"
        assert_json_error(await client.get("/", params=params), 400, "SignatureDoesNotMatch")


async def test_unknown_action_and_version(client: httpx.AsyncClient) -> None:
    for params in (
        {"Action": "DescribeRegions", "Version": VERSION, "Format": "JSON"},
        query_params(DOC_EXAMPLE_JOB_ID, Version="2020-11-09"),
    ):
        body = assert_json_error(
            await client.get("/", params=params), 404, "InvalidAction.NotFound"
        )
        assert body["Message"] == "Specified api is not found, please check your url and method."


async def test_missing_action(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params={"Version": VERSION, "Format": "JSON"})
    assert_json_error(response, 400, "MissingAction")


async def test_invalid_format(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID, Format="YAML"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/xml;charset=utf-8"
    assert ET.fromstring(response.content).findtext("Code") == "InvalidParameter.Format"


async def test_unsupported_method(client: httpx.AsyncClient) -> None:
    response = await client.put("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert_json_error(response, 400, "UnsupportedHTTPMethod")


async def test_auth_errors_are_not_counted_as_calls(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app, RpcSignatureV1(AK, "wrong", clock=clock)) as client:
        await client.get("/", params=query_params(DOC_EXAMPLE_JOB_ID))
    assert simulator_of(app).meters["QueryIProductionJob"].calls == 0


# --- V1 published and computed vectors (docs/upstream.md section 3.4) ---------------------------

MPS_V1_VECTOR = {
    "Action": "QueryIProductionJob",
    "Version": "2014-06-18",
    "Format": "JSON",
    "AccessKeyId": "testid",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureVersion": "1.0",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "Timestamp": "2016-02-23T12:46:24Z",
    "JobId": "88c6ca184c0e432bbf5b665e2a15****",
}


@pytest.mark.parametrize(
    ("method", "signature"),
    [("GET", "QoGbAjqSmF1VsUPAGQwYaxYKdno="), ("POST", "qQW8qivaYHWdHEfsOWXeR6fCr5Q=")],
)
def test_v1_reference_vector(method: str, signature: str) -> None:
    auth = Authenticator({"testid": "testsecret"})
    now = parse_timestamp("2016-02-23T12:46:24Z")
    caller = auth.verify_v1(method, {**MPS_V1_VECTOR, "Signature": signature}, now)
    assert caller.access_key_id == "testid"
    assert caller.signature_version == "v1"


# --- V3 ------------------------------------------------------------------------------------------


def v3_headers(entries: dict[str, str]) -> Headers:
    return Headers(raw=[(name.encode(), value.encode()) for name, value in entries.items()])


ECS_V3_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "authorization": (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    ),
}
ECS_V3_QUERY = {
    "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
    "RegionId": "cn-shanghai",
}


def test_v3_published_vector() -> None:
    auth = Authenticator({"YourAccessKeyId": "YourAccessKeySecret"})
    now = parse_timestamp("2023-10-26T10:22:32Z")
    caller = auth.verify_v3("POST", "/", ECS_V3_QUERY, v3_headers(ECS_V3_HEADERS), b"", now)
    assert caller.signature_version == "v3"


def test_v3_computed_mps_vector() -> None:
    # docs/upstream.md section 3.4: QueryIProductionJob, computed with the official functions.
    headers = {
        **ECS_V3_HEADERS,
        "host": "mts.cn-shanghai.aliyuncs.com",
        "x-acs-action": "QueryIProductionJob",
        "x-acs-version": "2014-06-18",
        "authorization": ECS_V3_HEADERS["authorization"].replace(
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0",
            "6a9054e64839c77eca9770153412ab7704b51791c08508fc7a8944ccd063d47b",
        ),
    }
    auth = Authenticator({"YourAccessKeyId": "YourAccessKeySecret"})
    now = parse_timestamp("2023-10-26T10:22:32Z")
    query = {"JobId": "88c6ca184c0e432bbf5b665e2a15****"}
    assert auth.verify_v3("POST", "/", query, v3_headers(headers), b"", now).access_key_id == (
        "YourAccessKeyId"
    )


def test_v3_published_vector_with_a_changed_query_fails() -> None:
    auth = Authenticator({"YourAccessKeyId": "YourAccessKeySecret"})
    now = parse_timestamp("2023-10-26T10:22:32Z")
    query = {**ECS_V3_QUERY, "RegionId": "cn-hangzhou"}
    with pytest.raises(ApiError) as caught:
        auth.verify_v3("POST", "/", query, v3_headers(ECS_V3_HEADERS), b"", now)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in caught.value.message


class OfficialV3(httpx.Auth):
    """Signs with the official `get_authorization`, over the headers this class adds."""

    requires_request_body = True

    def __init__(
        self,
        clock: ManualClock,
        *,
        secret: str = SECRET,
        nonce: str = "nonce-1",
        security_token: str | None = None,
        sign_token: bool = True,
        authorization: str | None = None,
    ) -> None:
        self.clock = clock
        self.secret = secret
        self.nonce = nonce
        self.security_token = security_token
        self.sign_token = sign_token
        self.authorization = authorization

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        payload = hashlib.sha256(request.content).hexdigest()
        signed = {
            "host": request.url.netloc.decode(),
            "x-acs-action": request.headers["x-acs-action"],
            "x-acs-version": request.headers["x-acs-version"],
            "x-acs-date": utc_timestamp(self.clock()),
            "x-acs-signature-nonce": self.nonce,
            "x-acs-content-sha256": payload,
        }
        if "content-type" in request.headers:
            signed["content-type"] = request.headers["content-type"]
        if self.security_token and self.sign_token:
            signed["x-acs-security-token"] = self.security_token
        official_request = SimpleNamespace(
            method=request.method,
            pathname="/",
            query=dict(parse_qsl(request.url.query.decode(), keep_blank_values=True)),
            headers=signed,
        )
        authorization = OfficialUtil.get_authorization(
            official_request, "ACS3-HMAC-SHA256", payload, AK, self.secret
        )
        request.headers.update(signed)
        if self.security_token and not self.sign_token:
            request.headers["x-acs-security-token"] = self.security_token
        request.headers["authorization"] = self.authorization or authorization
        yield request


V3_QUERY_HEADERS = {"x-acs-action": "QueryIProductionJob", "x-acs-version": VERSION}


async def test_v3_json_by_default_and_xml_on_request(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app) as client:
        response = await client.post(
            "/",
            params={"JobId": DOC_EXAMPLE_JOB_ID},
            headers=V3_QUERY_HEADERS,
            auth=OfficialV3(clock, nonce="a"),
        )
        assert response.status_code == 200, response.text
        assert response.json()["JobId"] == DOC_EXAMPLE_JOB_ID
        response = await client.post(
            "/",
            params={"JobId": DOC_EXAMPLE_JOB_ID, "Format": "XML"},
            headers=V3_QUERY_HEADERS,
            auth=OfficialV3(clock, nonce="b"),
        )
        assert response.headers["content-type"] == "text/xml;charset=utf-8"
        assert ET.fromstring(response.content).findtext("JobId") == DOC_EXAMPLE_JOB_ID


async def test_v3_form_body_is_hashed(app: Starlette, clock: ManualClock) -> None:
    headers = {"x-acs-action": "SubmitIProductionJob", "x-acs-version": VERSION}
    async with asgi_client(app) as client:
        response = await client.post(
            "/",
            data={"FunctionName": "Cover", "UserData": "a b*c~"},
            headers=headers,
            auth=OfficialV3(clock),
        )
    assert response.status_code == 200, response.text
    assert len(response.json()["JobId"]) == 32


async def test_v3_errors(app: Starlette, clock: ManualClock) -> None:
    async with asgi_client(app) as client:

        async def call(auth: httpx.Auth, **headers: str) -> httpx.Response:
            return await client.post(
                "/",
                params={"JobId": DOC_EXAMPLE_JOB_ID},
                headers={**V3_QUERY_HEADERS, **headers},
                auth=auth,
            )

        body = assert_json_error(
            await call(OfficialV3(clock, secret="wrong", nonce="1")), 400, "SignatureDoesNotMatch"
        )
        assert "server string to sign is:ACS3-HMAC-SHA256\n" in body["Message"]
        stale = ManualClock(clock() - 16 * 60)
        assert_json_error(await call(OfficialV3(stale, nonce="2")), 400, "InvalidTimeStamp.Expired")
        assert (await call(OfficialV3(clock, nonce="3"))).status_code == 200
        assert_json_error(await call(OfficialV3(clock, nonce="3")), 400, "SignatureNonceUsed")
        # A security token is welcome, but only signed.
        assert (await call(OfficialV3(clock, nonce="4", security_token="t"))).status_code == 200
        assert_json_error(
            await call(OfficialV3(clock, nonce="5", security_token="t", sign_token=False)),
            400,
            "IncompleteSignature",
        )
        assert_json_error(
            await call(
                OfficialV3(clock, nonce="6", authorization="ACS3-HMAC-SHA256 Credential=" + AK)
            ),
            400,
            "IncompleteSignature",
        )


async def test_v3_body_must_match_its_hash(app: Starlette, clock: ManualClock) -> None:
    class TamperedBody(OfficialV3):
        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            for signed in super().auth_flow(request):
                signed.stream = httpx.ByteStream(b"FunctionName=VideoClip")
                signed.headers["content-length"] = "22"
                yield signed

    headers = {"x-acs-action": "SubmitIProductionJob", "x-acs-version": VERSION}
    async with asgi_client(app) as client:
        response = await client.post(
            "/", data={"FunctionName": "Cover"}, headers=headers, auth=TamperedBody(clock)
        )
    body = assert_json_error(response, 400, "SignatureDoesNotMatch")
    assert "x-acs-content-sha256" in body["Message"]
