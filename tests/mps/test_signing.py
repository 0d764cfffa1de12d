from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from alibabacloud_openapi_util.client import Client as OfficialUtil
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mps.signing import RpcSignatureV1, sign, string_to_sign, utc_timestamp
from gateway.rfc3986 import percent_encode

# docs/upstream.md section 3.4: the published ECS DescribeRegions vector.
DESCRIBE_REGIONS = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}
NONCE = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
TIMESTAMP = 1456231584.0  # 2016-02-23T12:46:24Z
QUERY_JOB = {
    "Action": "QueryIProductionJob",
    "Version": "2014-06-18",
    "Format": "JSON",
    "JobId": "88c6ca184c0e432bbf5b665e2a15****",
}
COMMON = {
    "AccessKeyId": "testid",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureVersion": "1.0",
    "SignatureNonce": NONCE,
    "Timestamp": "2016-02-23T12:46:24Z",
}
SUBMIT_JOB = {"Action": "SubmitIProductionJob", "Version": "2014-06-18", "Format": "JSON"}
SUBMIT_FORM = {
    "FunctionName": "CaptionExtraction",
    "Input": "oss://b.oss-cn-shanghai.aliyuncs.com/a b/测试*~+/x.mp4",
    "Output": "oss://b.oss-cn-shanghai.aliyuncs.com/iproduction/{source}-{timestamp}-{sequenceId}.srt",
    "JobParams": '{"fps":5,"roi":[[0.75,1],[0,1]]}',
}


# --- the signature function -------------------------------------------------------------------


def test_published_vector() -> None:
    assert string_to_sign("GET", DESCRIBE_REGIONS) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    )
    assert sign("GET", DESCRIBE_REGIONS, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_published_vector_with_the_old_timestamp_spelling() -> None:
    params = {("TimeStamp" if k == "Timestamp" else k): v for k, v in DESCRIBE_REGIONS.items()}

    assert sign("GET", params, "testsecret") == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


@pytest.mark.parametrize(
    ("method", "signature"),
    [("GET", "QoGbAjqSmF1VsUPAGQwYaxYKdno="), ("POST", "qQW8qivaYHWdHEfsOWXeR6fCr5Q=")],
)
def test_mps_vectors(method: str, signature: str) -> None:
    assert sign(method, {**QUERY_JOB, **COMMON}, "testsecret") == signature


def test_mps_vector_with_tricky_values() -> None:
    params = {**SUBMIT_JOB, **COMMON, "SignatureNonce": "n1", **SUBMIT_FORM}

    assert sign("POST", params, "testsecret") == "XXYuRUHP+gmoBVelpcJLc3rakI4="


def test_signature_ignores_a_signature_parameter_and_method_case() -> None:
    expected = sign("GET", DESCRIBE_REGIONS, "testsecret")

    assert sign("GET", {**DESCRIBE_REGIONS, "Signature": "stale"}, "testsecret") == expected
    assert sign("get", DESCRIBE_REGIONS, "testsecret") == expected
    assert sign("POST", DESCRIBE_REGIONS, "testsecret") != expected


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("a b", "a%20b"),
        ("*", "%2A"),
        ("~-_.", "~-_."),
        ("+/=&%", "%2B%2F%3D%26%25"),
        ("测", "%E6%B5%8B"),
        ("🎬", "%F0%9F%8E%AC"),
    ],
)
def test_percent_encode(text: str, encoded: str) -> None:
    assert percent_encode(text) == encoded


@given(text=st.text(max_size=40))
def test_percent_encode_agrees_with_quote(text: str) -> None:
    # Its shortcut for text that needs no encoding must not change any answer.
    assert percent_encode(text) == quote(text, safe="")


def test_utc_timestamp() -> None:
    assert utc_timestamp(TIMESTAMP) == "2016-02-23T12:46:24Z"
    assert utc_timestamp(TIMESTAMP + 0.999) == "2016-02-23T12:46:24Z"


# Text rich in what percent-encoding gets wrong: reserved characters, `~`, `%`, spaces, CJK, emoji.
tricky_text = st.text(
    st.sampled_from(list(" *~+/%=&?#:;,'\"!()测试😀🎬é"))
    | st.characters(exclude_categories=["Cs"]),
    max_size=12,
)
methods = st.sampled_from(["GET", "POST"])


# `sign` leaves a `Signature` parameter out (tested above); the official function signs all it gets.
param_names = tricky_text.filter(lambda name: name != "Signature")


@given(
    params=st.dictionaries(param_names, tricky_text, max_size=8), method=methods, secret=tricky_text
)
def test_sign_matches_the_official_sdk(params: dict[str, str], method: str, secret: str) -> None:
    assert sign(method, params, secret) == OfficialUtil.get_rpcsignature(params, method, secret)


# --- the httpx.Auth ---------------------------------------------------------------------------


def received_params(request: httpx.Request) -> dict[str, str]:
    """What a server reads out of a request: the query string, then a form body over it (the merge
    the official SDK signs: `TeaCore.merge(query, body)`). Parsed here independently of signing.py.
    """
    params = dict(httpx.QueryParams(request.url.query.decode()).multi_items())
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(request.content.decode(), keep_blank_values=True))
    return params


def verifies(request: httpx.Request, secret: str) -> bool:
    """Whether a server holding `secret` would accept the request's signature."""
    params = received_params(request)
    signature = params.pop("Signature")
    expected: str = OfficialUtil.get_rpcsignature(params, request.method, secret)
    return expected == signature


def fixed_auth(
    security_token: str | None = None, *, nonce: str = NONCE, secret: str = "testsecret"
) -> RpcSignatureV1:
    return RpcSignatureV1(
        "testid", secret, security_token, clock=lambda: TIMESTAMP, nonce=lambda: nonce
    )


def send(
    auth: RpcSignatureV1,
    method: str,
    params: dict[str, str],
    data: dict[str, str] | None = None,
) -> httpx.Request:
    """The request the auth lets through to the transport, as the transport received it."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"RequestId": "r"})

    with httpx.Client(
        transport=httpx.MockTransport(handler), base_url="https://mts.cn-shanghai.aliyuncs.com"
    ) as client:
        client.request(method, "/", params=params, data=data, auth=auth)
    (request,) = seen
    return request


async def send_async(
    auth: RpcSignatureV1, method: str, params: dict[str, str], data: dict[str, str] | None = None
) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"RequestId": "r"})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="https://mts.cn-shanghai.aliyuncs.com"
    ) as client:
        await client.request(method, "/", params=params, data=data, auth=auth)
    (request,) = seen
    return request


@pytest.mark.parametrize(
    ("method", "signature"),
    [("GET", "QoGbAjqSmF1VsUPAGQwYaxYKdno="), ("POST", "qQW8qivaYHWdHEfsOWXeR6fCr5Q=")],
)
async def test_auth_sends_the_common_parameters_and_the_vector_signature(
    method: str, signature: str
) -> None:
    request = await send_async(fixed_auth(), method, QUERY_JOB)

    assert received_params(request) == {**QUERY_JOB, **COMMON, "Signature": signature}
    # On the wire: RFC 3986 encoding, `*` as %2A, the signature's `+`, `/` and `=` escaped.
    assert request.url.query.decode() == (
        "Action=QueryIProductionJob&Version=2014-06-18&Format=JSON"
        "&JobId=88c6ca184c0e432bbf5b665e2a15%2A%2A%2A%2A&AccessKeyId=testid"
        "&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0"
        f"&SignatureNonce={NONCE}&Timestamp=2016-02-23T12%3A46%3A24Z"
        f"&Signature={percent_encode(signature)}"
    )
    assert verifies(request, "testsecret")


async def test_auth_signs_form_body_parameters_and_keeps_credentials_out_of_the_url() -> None:
    request = await send_async(
        fixed_auth("sts-token", nonce="n1"), "POST", SUBMIT_JOB, data=SUBMIT_FORM
    )

    # URLs end up in logs: a form POST carries the credentials in its body instead.
    query = dict(httpx.QueryParams(request.url.query.decode()).multi_items())
    assert query == SUBMIT_JOB
    body = dict(parse_qsl(request.content.decode()))
    assert body == {
        **SUBMIT_FORM,
        **COMMON,
        "SignatureNonce": "n1",
        "SecurityToken": "sts-token",
        "Signature": body["Signature"],
    }
    assert request.headers["content-length"] == str(len(request.content))
    assert verifies(request, "testsecret")


async def test_form_body_signature_matches_the_vector() -> None:
    request = await send_async(fixed_auth(nonce="n1"), "POST", SUBMIT_JOB, data=SUBMIT_FORM)

    assert received_params(request)["Signature"] == "XXYuRUHP+gmoBVelpcJLc3rakI4="


async def test_a_name_in_both_query_and_body_is_signed_with_the_body_value() -> None:
    # A server reads the body over the query (the official SDK signs that merge too); the auth once
    # signed the query's value instead, and such a request failed verification.
    request = await send_async(fixed_auth(), "POST", QUERY_JOB, data={"JobId": "from-body"})

    assert received_params(request)["JobId"] == "from-body"
    assert verifies(request, "testsecret")


def test_auth_works_with_a_sync_client() -> None:
    request = send(fixed_auth(nonce="n1"), "POST", SUBMIT_JOB, data=SUBMIT_FORM)

    assert received_params(request)["Signature"] == "XXYuRUHP+gmoBVelpcJLc3rakI4="


async def test_auth_signs_the_security_token() -> None:
    request = await send_async(fixed_auth("sts-token/+="), "GET", QUERY_JOB)

    params = received_params(request)
    assert params["SecurityToken"] == "sts-token/+="
    assert verifies(request, "testsecret")
    unsigned_token = {k: v for k, v in params.items() if k not in ("Signature", "SecurityToken")}
    assert (
        OfficialUtil.get_rpcsignature(unsigned_token, "GET", "testsecret") != (params["Signature"])
    )


@pytest.mark.parametrize("token", [None, ""])
async def test_auth_without_a_token_sends_none(token: str | None) -> None:
    request = await send_async(fixed_auth(token), "GET", QUERY_JOB)

    assert "SecurityToken" not in received_params(request)


async def test_auth_defaults_to_the_current_time_and_a_fresh_nonce() -> None:
    auth = RpcSignatureV1("testid", "testsecret")

    before = time.time()
    first = received_params(await send_async(auth, "GET", QUERY_JOB))
    second = received_params(await send_async(auth, "GET", QUERY_JOB))
    after = time.time()

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["Timestamp"])
    assert utc_timestamp(before) <= first["Timestamp"] <= utc_timestamp(after)
    assert re.fullmatch(r"[0-9a-f]{32}", first["SignatureNonce"])
    assert first["SignatureNonce"] != second["SignatureNonce"]


async def test_auth_replaces_stale_common_parameters() -> None:
    stale = {**QUERY_JOB, "Timestamp": "2000-01-01T00:00:00Z", "Signature": "stale"}

    request = await send_async(fixed_auth(), "GET", stale)

    assert received_params(request) == {
        **QUERY_JOB,
        **COMMON,
        "Signature": "QoGbAjqSmF1VsUPAGQwYaxYKdno=",
    }


def test_repr_shows_neither_secret_nor_token() -> None:
    auth = RpcSignatureV1("testid", "s3cr3t-value", "t0ken-value")

    for shown in (repr(auth), str(auth), f"{auth!r}"):
        assert "testid" in shown
        assert "s3cr3t-value" not in shown
        assert "t0ken-value" not in shown


async def test_the_secret_never_travels() -> None:
    request = await send_async(
        RpcSignatureV1("testid", "s3cr3t-value"), "POST", SUBMIT_JOB, data=SUBMIT_FORM
    )

    assert "s3cr3t-value" not in str(request.url)
    assert b"s3cr3t-value" not in request.content
    assert all("s3cr3t-value" not in value for value in request.headers.values())


# Names the auth owns are left out: it overwrites them on purpose.
OWN = {*COMMON, "SecurityToken", "Signature"}
names = tricky_text.filter(lambda name: name not in OWN)


@settings(max_examples=150, deadline=None)
@given(
    query=st.dictionaries(names, tricky_text, max_size=6),
    form=st.dictionaries(names, tricky_text, max_size=6),
    method=methods,
    token=st.none() | tricky_text,
)
def test_any_request_the_auth_signs_verifies_with_the_official_sdk(
    query: dict[str, str], form: dict[str, str], method: str, token: str | None
) -> None:
    request = send(fixed_auth(token), method, query, data=form or None)

    assert verifies(request, "testsecret")
