"""MpsClient: every failure below it ends in exactly one documented `UpstreamError`.

The upstream is an `httpx.MockTransport` with plain handler functions, as in httpx's own tests:
each handler sees the signed request the client sent and answers what the cloud would
(docs/upstream.md section 4), or raises what a transport can raise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway import errors
from gateway.model import Job, JobState, SubmittedJob
from gateway.mps.client import API_VERSION, MpsClient, SubmitJobRequest
from gateway.mps.decode import MissingJobId
from gateway.mps.signing import RpcSignatureV1, request_params, sign, string_to_sign

Handler = Callable[[httpx.Request], httpx.Response]

ACCESS_KEY_ID = "LTAI5tClientTestKeyId"
SECRET = "client-test-secret"
TOKEN = "secret-token"
JOB_ID = "88c6ca184c0e432bbf5b665e2a15d0c1"
REQUEST_ID = "33D9749B-713A-4BCC-B3B4-8B0094083E97"
FETCHED_AT = 1_700_000_000.0
JSON_TYPE = "application/json;charset=utf-8"


@asynccontextmanager
async def mps(handler: Handler) -> AsyncIterator[MpsClient]:
    """A client signing with an STS token, whose upstream is `handler`."""
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler),
        base_url="https://mts.cn-shanghai.aliyuncs.com",
        auth=RpcSignatureV1(ACCESS_KEY_ID, SECRET, TOKEN),
    ) as http:
        yield MpsClient(http, region="cn-shanghai", clock=lambda: FETCHED_AT)


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    """A handler answering `body` as JSON with `status` to every request."""

    def handler(request: httpx.Request) -> httpx.Response:
        content = json.dumps(body).encode()
        return httpx.Response(
            status, content=content, headers={"content-type": JSON_TYPE, **(headers or {})}
        )

    return handler


def error_body(code: str, message: str) -> dict[str, str]:
    """An error answer in the upstream's shape (docs/upstream.md section 4.1)."""
    return {
        "RequestId": REQUEST_ID,
        "HostId": "mts.cn-shanghai.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": f"https://next.api.aliyun.com/troubleshoot?q={code}&product=Mts",
    }


async def query(handler: Handler) -> Job | None:
    async with mps(handler) as client:
        return await client.query_job(JOB_ID)


async def submit(handler: Handler) -> SubmittedJob:
    async with mps(handler) as client:
        return await client.submit_job(SubmitJobRequest(function_name="Cover"))


OPERATIONS = {"query": query, "submit": submit}


# --- httpx exceptions -------------------------------------------------------------------------


def class_name(cls: type) -> str:
    return cls.__name__


def httpx_exception_classes() -> Iterator[type[httpx.HTTPError]]:
    """httpx.HTTPError and every subclass httpx itself defines, however deep."""
    pending: list[type[httpx.HTTPError]] = [httpx.HTTPError]
    while pending:
        cls = pending.pop()
        if cls.__module__.partition(".")[0] == "httpx":
            yield cls
        pending.extend(cls.__subclasses__())


HTTPX_CLASSES = sorted(httpx_exception_classes(), key=class_name)

#: What each httpx exception must become. A class httpx adds later fails the meta-test until it is
#: classified here (and mapped in TRANSPORT_ERRORS if its nearest base is the wrong answer).
EXPECTED_TRANSPORT_ERRORS: dict[type[httpx.HTTPError], type[errors.UpstreamError]] = {
    httpx.HTTPError: errors.UpstreamUnavailable,
    httpx.RequestError: errors.UpstreamUnavailable,
    httpx.TransportError: errors.UpstreamUnavailable,
    httpx.TimeoutException: errors.UpstreamTimeout,
    httpx.ConnectTimeout: errors.UpstreamTimeout,
    httpx.ReadTimeout: errors.UpstreamTimeout,
    httpx.WriteTimeout: errors.UpstreamTimeout,
    httpx.PoolTimeout: errors.UpstreamTimeout,
    httpx.NetworkError: errors.UpstreamUnavailable,
    httpx.ConnectError: errors.UpstreamUnavailable,
    httpx.ReadError: errors.UpstreamUnavailable,
    httpx.WriteError: errors.UpstreamUnavailable,
    httpx.CloseError: errors.UpstreamUnavailable,
    httpx.ProxyError: errors.UpstreamUnavailable,
    httpx.UnsupportedProtocol: errors.UpstreamUnavailable,
    httpx.ProtocolError: errors.UpstreamUnavailable,
    httpx.LocalProtocolError: errors.UpstreamUnavailable,
    httpx.RemoteProtocolError: errors.UpstreamUnavailable,
    httpx.DecodingError: errors.UpstreamBadResponse,
    httpx.TooManyRedirects: errors.UpstreamBadResponse,
    httpx.HTTPStatusError: errors.UpstreamUnavailable,
}


def test_every_httpx_exception_is_classified() -> None:
    assert set(httpx_exception_classes()) == set(EXPECTED_TRANSPORT_ERRORS)


def instantiate(cls: type[httpx.HTTPError], request: httpx.Request) -> httpx.HTTPError:
    """The exception as httpx raises it: with the request, and the response where it needs one."""
    message = f"{cls.__name__} raised by the transport"
    if issubclass(cls, httpx.HTTPStatusError):
        return cls(message, request=request, response=httpx.Response(502, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls(message, request=request)
    return cls(message)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    "httpx_class",
    HTTPX_CLASSES,
    ids=class_name,
)
async def test_httpx_exception_maps_to_its_upstream_error(
    httpx_class: type[httpx.HTTPError], operation: str
) -> None:
    raised: list[httpx.HTTPError] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raised.append(instantiate(httpx_class, request))
        raise raised[0]

    with pytest.raises(errors.UpstreamError) as caught:
        await OPERATIONS[operation](handler)
    expected = EXPECTED_TRANSPORT_ERRORS[httpx_class]
    error = caught.value
    assert type(error) is expected
    assert error.__cause__ is raised[0]
    action = "QueryIProductionJob" if operation == "query" else "SubmitIProductionJob"
    assert error.message == f"{action} failed before an answer arrived ({httpx_class.__name__})."
    # No answer arrived: nothing upstream to quote.
    assert error.extensions == {"code": expected.code}
    # Only a failure before a connection was made proves the upstream never saw the call
    # (what lets a submission be sent again).
    never_sent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.ProxyError,
        httpx.UnsupportedProtocol,
        httpx.LocalProtocolError,
    )
    assert error.delivered is not issubclass(httpx_class, never_sent)


class Chunks(httpx.AsyncByteStream):
    """A response body sent in chunks, optionally cut short by `then_raise`."""

    def __init__(self, *chunks: bytes, then_raise: Exception | None = None) -> None:
        self._chunks = chunks
        self._then_raise = then_raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._then_raise is not None:
            raise self._then_raise


async def test_a_body_that_fails_to_decompress_is_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": JSON_TYPE, "content-encoding": "gzip"},
            stream=Chunks(b'{"RequestId": "not gzip at all"}'),
        )

    with pytest.raises(errors.UpstreamBadResponse) as caught:
        await query(handler)
    assert isinstance(caught.value.__cause__, httpx.DecodingError)


async def test_a_body_cut_short_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cut = httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(
            200,
            headers={"content-type": JSON_TYPE},
            stream=Chunks(b'{"RequestId": "', then_raise=cut),
        )

    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await query(handler)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_programmer_errors_of_a_transport_are_not_translated() -> None:
    # Outside the httpx.HTTPError tree: a bug, which the API layer masks, not an upstream failure.
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in a transport")

    with pytest.raises(RuntimeError, match="a bug in a transport"):
        await query(handler)


# --- upstream error codes ---------------------------------------------------------------------

#: The signature errors quote the server's StringToSign, which holds the AccessKeyId and the
#: security token. The `{sts}` placeholder is filled with the one the upstream would compute.
SIGNATURE_MESSAGE = (
    "Specified signature is not matched with our calculation. server string to sign is:{sts}"
)
INCOMPLETE_MESSAGE = (
    "The request signature does not conform to Aliyun standards. server string to sign is:{sts}"
)

UPSTREAM_CODES = [
    # (code, HTTP status, message, expected class); docs/upstream.md section 4.2 plus MPS codes.
    ("Throttling", 400, "Request was denied due to request throttling.", errors.UpstreamThrottled),
    ("Throttling", 429, "Request was denied due to request throttling.", errors.UpstreamThrottled),
    (
        "Throttling.User",
        400,
        "Request was denied due to user flow control.",
        errors.UpstreamThrottled,
    ),
    (
        "Throttling.User",
        429,
        "Request was denied due to user flow control.",
        errors.UpstreamThrottled,
    ),
    (
        "Throttling.Api",
        400,
        "Request was denied due to api flow control.",
        errors.UpstreamThrottled,
    ),
    (
        "Throttling.Api",
        429,
        "Request was denied due to api flow control.",
        errors.UpstreamThrottled,
    ),
    (
        "Throttling.Api",
        503,
        "Request was denied due to api flow control.",
        errors.UpstreamThrottled,
    ),
    ("SignatureDoesNotMatch", 400, SIGNATURE_MESSAGE, errors.UpstreamAuthFailed),
    ("SignatureDoesNotMatch", 403, SIGNATURE_MESSAGE, errors.UpstreamAuthFailed),
    ("IncompleteSignature", 400, INCOMPLETE_MESSAGE, errors.UpstreamAuthFailed),
    (
        "InvalidAccessKeyId.NotFound",
        400,
        "Specified access key is not found.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InvalidAccessKeyId.NotFound",
        404,
        "Specified access key is not found.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InvalidAccessKeyId.Inactive",
        400,
        "Specified access key is disabled.",
        errors.UpstreamAuthFailed,
    ),
    (
        "SignatureNonceUsed",
        400,
        "Specified signature nonce was used already.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InvalidTimeStamp.Expired",
        400,
        "Specified time stamp or date value is expired.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InvalidTimeStamp.Format",
        400,
        "Specified time stamp or date value is not well formatted.",
        errors.UpstreamAuthFailed,
    ),
    (
        "Forbidden.RAM",
        403,
        "User not authorized to operate on the specified resource.",
        errors.UpstreamAuthFailed,
    ),
    (
        "Forbidden",
        403,
        "User not authorized to operate on the specified resource.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InvalidIdentity.ServiceDisabled",
        400,
        "The MPS service is not activated.",
        errors.UpstreamAuthFailed,
    ),
    (
        "PermissionDenied.ResourceAccess",
        400,
        "MTS not authorized to operate on the specified resource.",
        errors.UpstreamAuthFailed,
    ),
    (
        "InternalError",
        500,
        "The request processing has failed due to some unknown error, exception or failure.",
        errors.UpstreamUnavailable,
    ),
    (
        "ServiceUnavailable",
        503,
        "The request has failed due to a temporary failure of the server.",
        errors.UpstreamUnavailable,
    ),
    (
        "InvalidParameter",
        400,
        'The specified parameter "JobId" is invalid.',
        errors.UpstreamRejected,
    ),
    (
        "InvalidSecurityToken.Expired",
        400,
        "Specified SecurityToken is expired.",
        errors.UpstreamAuthFailed,
    ),
    (
        "UnknownError",
        400,
        "The request processing has failed due to some unknown error.",
        errors.UpstreamUnavailable,
    ),
    ("MissingJobId", 400, "JobId is mandatory for this action.", errors.UpstreamRejected),
    ("MissingParameter", 400, "Version is mandatory for this action.", errors.UpstreamRejected),
    (
        "InvalidSignatureMethod",
        400,
        "Specified signature method is not valid.",
        errors.UpstreamRejected,
    ),
    ("UnsupportedHTTPMethod", 400, "", errors.UpstreamRejected),
    (
        "InvalidApi.NotFound",
        404,
        "Specified api is not found, please check your url and method.",
        errors.UpstreamRejected,
    ),
    (
        "InvalidProduct.NotFound",
        404,
        "Cannot find product according to your specified domain.",
        errors.UpstreamRejected,
    ),
    (
        "InvalidProtocol.NeedSsl",
        404,
        "Your request is denied as lack of ssl protect.",
        errors.UpstreamRejected,
    ),
    (
        "InvalidParameter.Format",
        400,
        "Specified parameter format is not valid.",
        errors.UpstreamRejected,
    ),
    (
        "InvalidAction.NotFound",
        404,
        "Specified api is not found, please check your url and method.",
        errors.UpstreamRejected,
    ),
    ("SomethingNew.Entirely", 400, "A code the gateway has never seen.", errors.UpstreamRejected),
    (
        "SomethingNew.Entirely",
        502,
        "A code the gateway has never seen.",
        errors.UpstreamUnavailable,
    ),
]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in UPSTREAM_CODES],
)
async def test_upstream_code_maps_to_its_error(
    code: str, status: int, message: str, expected: type[errors.UpstreamError], operation: str
) -> None:
    quoted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = request_params(request)
        del params["Signature"]
        quoted.append(message.format(sts=string_to_sign(request.method, params)))
        return answer(status, error_body(code, quoted[0]))(request)

    with pytest.raises(errors.UpstreamError) as caught:
        await OPERATIONS[operation](handler)
    error = caught.value
    assert type(error) is expected
    assert (error.upstream_code, error.request_id, error.status_code) == (code, REQUEST_ID, status)
    assert error.extensions == {
        "code": expected.code,
        "upstreamCode": code,
        "upstreamRequestId": REQUEST_ID,
        "httpStatus": status,
        **({"retryAfter": 1.0} if expected is errors.UpstreamThrottled else {}),
    }
    assert code in error.message
    if expected is errors.UpstreamRejected:
        # A plain rejection holds no secret: its message helps whoever reads the error.
        assert quoted[0] in error.message
    else:
        assert quoted[0] not in error.message


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("code", ["SignatureDoesNotMatch", "IncompleteSignature"])
async def test_the_server_string_to_sign_never_leaves_the_client(code: str, operation: str) -> None:
    # The upstream quotes its StringToSign: the AccessKeyId and the STS token in clear text.
    leaked = (
        "server string to sign is: POST&/&AccessKeyId=LTAI5tClientTestKeyId&Action=Query"
        f"IProductionJob&SecurityToken={TOKEN}&SignatureMethod=HMAC-SHA1"
    )
    with pytest.raises(errors.UpstreamAuthFailed) as caught:
        await OPERATIONS[operation](answer(400, error_body(code, f"Bad signature. {leaked}")))
    error = caught.value
    shown = " ".join((str(error), error.message, json.dumps(error.extensions), repr(error.args)))
    for secret in ("server string to sign", ACCESS_KEY_ID, "LTAI", TOKEN, SECRET):
        assert secret not in shown


async def test_resource_not_found_is_no_such_job() -> None:
    message = f'The resource operated "{JOB_ID}" cannot be found.'
    body = error_body("InvalidParameter.ResourceNotFound", message)
    assert await query(answer(400, body)) is None


async def test_resource_not_found_on_submit_is_a_rejection() -> None:
    message = 'The resource operated "oss://b.oss-cn-shanghai.aliyuncs.com/x.mp4" cannot be found.'
    with pytest.raises(errors.UpstreamRejected) as caught:
        await submit(answer(400, error_body("InvalidParameter.ResourceNotFound", message)))
    assert caught.value.upstream_code == "InvalidParameter.ResourceNotFound"
    assert message in caught.value.message


async def test_codes_are_read_case_insensitively() -> None:
    # tea_openapi reads `Code` or `code` (docs/upstream.md section 4.1).
    body = {"requestId": REQUEST_ID, "code": "Throttling.User", "message": "flow control"}
    with pytest.raises(errors.UpstreamThrottled) as caught:
        await query(answer(400, body))
    assert (caught.value.upstream_code, caught.value.request_id) == ("Throttling.User", REQUEST_ID)


async def test_an_error_status_without_a_code_is_named_by_its_status() -> None:
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await query(answer(504, {"RequestId": REQUEST_ID}))
    assert caught.value.extensions == {
        "code": "UPSTREAM_UNAVAILABLE",
        "upstreamCode": "HTTP504",
        "upstreamRequestId": REQUEST_ID,
        "httpStatus": 504,
    }


# --- retry hints ------------------------------------------------------------------------------

THROTTLED = error_body("Throttling.User", "Request was denied due to user flow control.")


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"x-acs-retry-after": "1500"}, 1.5),  # milliseconds, as tea_openapi reads it
        ({"x-acs-retry-after": "250"}, 0.25),
        ({"retry-after": "2"}, 2.0),  # the standard header is in seconds
        ({"x-acs-retry-after": "500", "retry-after": "7"}, 0.5),
        ({"x-acs-retry-after": "soon", "retry-after": "3"}, 3.0),
        ({}, None),
        ({"x-acs-retry-after": "0"}, None),
        ({"x-acs-retry-after": "-1000"}, None),
        ({"x-acs-retry-after": "soon"}, None),
        # Not a number JSON can carry: it must not reach a client as retryAfter.
        ({"x-acs-retry-after": "inf"}, None),
        ({"x-acs-retry-after": "nan"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ],
    ids=repr,
)
@pytest.mark.parametrize("status", [400, 429, 503])
async def test_retry_after(headers: dict[str, str], retry_after: float | None, status: int) -> None:
    with pytest.raises(errors.UpstreamThrottled) as caught:
        await query(answer(status, THROTTLED, headers))
    error = caught.value
    assert error.retry_after == retry_after
    expected: dict[str, object] = {
        "code": "UPSTREAM_THROTTLED",
        "upstreamCode": "Throttling.User",
        "upstreamRequestId": REQUEST_ID,
        "httpStatus": status,
    }
    # Always a hint for the client: the upstream's, else its window.
    expected["retryAfter"] = 1.0 if retry_after is None else retry_after
    assert error.extensions == expected
    json.dumps(error.extensions, allow_nan=False)  # what a client receives is valid JSON


# --- bodies that are not what the protocol says -----------------------------------------------

NOT_JSON_OBJECTS = {
    "html": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "truncated": b'{"RequestId":"33D9749B","JobId":"88c6ca18',
    "empty": b"",
    "whitespace": b" \r\n",
    "list": b'[{"JobId": "88c6ca184c0e432bbf5b665e2a15d0c1", "State": "Success"}]',
    "empty-list": b"[]",
    "string": b'"Success"',
    "number": b"200",
    "null": b"null",
    "not-utf8": b'{"State": "\xff\xfe"}',
    "xml": (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><RequestId>33D9749B</RequestId>'
        b"<HostId>mts.aliyuncs.com</HostId><Code>Throttling.User</Code>"
        b"<Message>Request was denied due to user flow control.</Message></Error>"
    ),
    # Deeper than the JSON parser's recursion limit: it must not escape as a RecursionError.
    "too-deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("status", [200, 400, 503])
@pytest.mark.parametrize("content", NOT_JSON_OBJECTS.values(), ids=NOT_JSON_OBJECTS.keys())
async def test_a_body_that_is_not_a_json_object_is_a_bad_response(
    content: bytes, status: int, operation: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        content_type = "text/xml;charset=utf-8" if content.startswith(b"<?xml") else JSON_TYPE
        headers = {"content-type": content_type, "x-acs-request-id": REQUEST_ID}
        return httpx.Response(status, content=content, headers=headers)

    with pytest.raises(errors.UpstreamBadResponse) as caught:
        await OPERATIONS[operation](handler)
    error = caught.value
    # The RequestId of the header survives a body that cannot be read: support needs it.
    assert error.extensions == {
        "code": "UPSTREAM_BAD_RESPONSE",
        "upstreamRequestId": REQUEST_ID,
        "httpStatus": status,
    }
    assert f"HTTP {status}" in error.message


async def test_the_request_id_header_stands_in_for_a_body_without_one() -> None:
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        await query(answer(503, {"Code": "ServiceUnavailable"}, {"x-acs-request-id": REQUEST_ID}))
    assert caught.value.request_id == REQUEST_ID


# --- QueryIProductionJob ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"RequestId": REQUEST_ID, "JobId": JOB_ID},  # docs/upstream.md §1.7: the likely "not found"
        {"RequestId": REQUEST_ID},
        {"RequestId": REQUEST_ID, "JobId": JOB_ID, "State": ""},
        {"RequestId": REQUEST_ID, "JobId": JOB_ID, "State": None},
        {},
    ],
    ids=repr,
)
async def test_an_answer_without_state_is_no_such_job(body: dict[str, object]) -> None:
    assert await query(answer(200, body)) is None


async def test_query_sends_a_signed_request_and_decodes_the_job() -> None:
    received: list[httpx.Request] = []
    body = {
        "RequestId": REQUEST_ID,
        "JobId": JOB_ID,
        "FunctionName": "Cover",
        "State": "Success",
        "Output": "oss://out.oss-cn-shanghai.aliyuncs.com/cover/{source}.jpg",
        "Result": json.dumps({"Code": "Success", "Data": json.dumps({"result": []})}),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return answer(200, body)(request)

    job = await query(handler)
    assert job is not None
    assert (job.id, job.state, job.function_name) == (JOB_ID, JobState.SUCCESS, "Cover")
    assert (job.request_id, job.fetched_at) == (REQUEST_ID, FETCHED_AT)

    (request,) = received
    params = request_params(request)
    assert request.method == "POST"
    assert params["Signature"] == sign(request.method, params, SECRET)
    assert {name: params[name] for name in ("Action", "Version", "Format", "JobId")} == {
        "Action": "QueryIProductionJob",
        "Version": API_VERSION,
        "Format": "JSON",
        "JobId": JOB_ID,
    }
    assert (params["AccessKeyId"], params["SecurityToken"]) == (ACCESS_KEY_ID, TOKEN)


async def test_each_call_is_the_request_httpx_and_the_auth_would_build() -> None:
    """The client builds its calls from a per-action template and `signed_form` (cheap enough to
    sign every waiting fetch's call ahead of its slot): byte for byte what httpx sends when it
    builds the same form POST and runs the auth flow, timeout and default headers included."""
    auth = RpcSignatureV1(
        ACCESS_KEY_ID, SECRET, TOKEN, clock=lambda: FETCHED_AT, nonce=lambda: "fixed-nonce"
    )
    async with httpx.AsyncClient(
        base_url="https://mts.cn-shanghai.aliyuncs.com",
        auth=auth,
        headers={"user-agent": "mps-gateway/test"},
        timeout=httpx.Timeout(3.0, connect=1.5),
    ) as http:
        client = MpsClient(http)
        for action, params in [
            ("QueryIProductionJob", {"JobId": JOB_ID}),
            ("QueryIProductionJob", {"JobId": "a b*~é"}),  # what encoding gets wrong
            ("SubmitIProductionJob", {"FunctionName": "Cover", "JobParams": "{mode:'gif'}"}),
        ]:
            built = client._signed(action, params)
            unsigned = http.build_request(
                "POST",
                "/",
                params={"Action": action, "Version": API_VERSION, "Format": "JSON"},
                data=params,
            )
            expected = next(auth.sync_auth_flow(unsigned))
            assert (built.method, built.url) == (expected.method, expected.url)
            assert built.headers.multi_items() == expected.headers.multi_items()
            assert built.content == expected.content
            assert built.extensions == expected.extensions


# --- SubmitIProductionJob ---------------------------------------------------------------------


async def test_submit_sends_every_given_parameter_signed() -> None:
    received: list[httpx.Request] = []
    new_job_id = "39f8e0bc005e4f309379701645f4d0c1"

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return answer(200, {"RequestId": REQUEST_ID, "JobId": new_job_id})(request)

    request = SubmitJobRequest(
        function_name="CaptionExtraction",
        input="oss://in.oss-cn-shanghai.aliyuncs.com/a b/测试*~+/x.mp4",
        output="oss://out.oss-cn-shanghai.aliyuncs.com/{source}-{timestamp}.srt",
        job_params='{"fps":5,"roi":[[0.75,1],[0,1]]}',
        user_data='{"orderId":"A1029"}',
        pipeline_id="39f8e0bc005e4f309379701645f4d0c1",
    )
    async with mps(handler) as client:
        submitted = await client.submit_job(request)
    assert submitted == SubmittedJob(job_id=new_job_id, request_id=REQUEST_ID)

    (sent,) = received
    params = request_params(sent)
    assert params["Signature"] == sign(sent.method, params, SECRET)
    common = {
        "AccessKeyId",
        "SecurityToken",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureVersion",
        "Timestamp",
    }
    assert {name: value for name, value in params.items() if name not in common} == {
        "Action": "SubmitIProductionJob",
        "Version": API_VERSION,
        "Format": "JSON",
        "FunctionName": "CaptionExtraction",
        "Input": request.input,
        "Output": request.output,
        "JobParams": request.job_params,
        "UserData": request.user_data,
        "PipelineId": request.pipeline_id,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"RequestId": REQUEST_ID},
        {"RequestId": REQUEST_ID, "JobId": ""},
        {"RequestId": REQUEST_ID, "JobId": "  "},
        {"RequestId": REQUEST_ID, "JobId": None},
    ],
    ids=repr,
)
async def test_submit_without_a_job_id_is_a_bad_response(body: dict[str, object]) -> None:
    with pytest.raises(errors.UpstreamBadResponse) as caught:
        await submit(answer(200, body))
    assert caught.value.extensions == {
        "code": "UPSTREAM_BAD_RESPONSE",
        "upstreamRequestId": REQUEST_ID,
    }
    assert isinstance(caught.value.__cause__, MissingJobId)
