"""`MpsClient`: one signed RPC call to MPS in, one domain object (or one `UpstreamError`) out.

The client owns the wire protocol and nothing else: it never retries, waits for a budget or caches
(the fetcher does, one layer up), and it never returns an `httpx.Response`. Every failure of the
layers below (httpx exceptions, HTTP error statuses, upstream error codes, undecodable bodies) is
translated to the `gateway.errors` tree in exactly one place, `_translate`. Each call's outcome
is told to a `CallObserver` (metrics, traces, logs), which never changes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx

from gateway import errors
from gateway.model import Job, SubmittedJob
from gateway.mps.decode import decode_job, decode_submit
from gateway.mps.signing import FORM_CONTENT_TYPE, RpcSignatureV1, encode_query

logger = logging.getLogger(__name__)

API_VERSION = "2014-06-18"
QUERY_ACTION = "QueryIProductionJob"
SUBMIT_ACTION = "SubmitIProductionJob"

#: httpx exceptions, most specific first: the first matching row names the gateway error.
TRANSPORT_ERRORS: tuple[tuple[type[httpx.HTTPError], type[errors.UpstreamError]], ...] = (
    (httpx.TimeoutException, errors.UpstreamTimeout),
    (httpx.DecodingError, errors.UpstreamBadResponse),
    (httpx.TooManyRedirects, errors.UpstreamBadResponse),
    (httpx.TransportError, errors.UpstreamUnavailable),
    (httpx.HTTPError, errors.UpstreamUnavailable),
)

#: httpx exceptions raised before any byte of the request left: the upstream never saw it.
UNDELIVERED_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)

#: Upstream codes meaning "these credentials cannot call this API" (docs/upstream.md section 4.3).
AUTH_CODE_PREFIXES = (
    "InvalidAccessKeyId",
    "InvalidAccessKeySecret",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidSecurityToken",
    "Forbidden",
    "InvalidIdentity",
    "NoPermission",
    "PermissionDenied",
)
#: Upstream codes of a request the gateway signed wrongly in time or nonce: nothing a retry of the
#: same request fixes, and, as a clock problem of this host, worth naming as an auth failure.
CLOCK_CODE_PREFIXES = ("InvalidTimeStamp", "SignatureNonceUsed")
NOT_FOUND_CODES = ("InvalidParameter.ResourceNotFound",)
#: Response header holding the RequestId (also in the body, when the body can be read).
REQUEST_ID_HEADER = "x-acs-request-id"
UNAVAILABLE_CODES = ("ServiceUnavailable", "InternalError", "UnknownError")


class CallObserver(Protocol):
    """Told of each upstream call as it ends. Must not raise, block or keep the error."""

    def called(
        self,
        action: str,
        *,
        seconds: float,
        error: errors.UpstreamError | None,
        request_id: str | None,
    ) -> None:
        """`action` ended after a round trip of `seconds` (0 when it failed before sending),
        with `error` (None: the upstream answered it) and the upstream's RequestId, if known.
        QueryIProductionJob for a job that does not exist ends with an `UpstreamRejected`
        whose `upstream_code` is among NOT_FOUND_CODES."""
        ...


class _Unobserved:
    __slots__ = ()

    def called(
        self,
        action: str,
        *,
        seconds: float,
        error: errors.UpstreamError | None,
        request_id: str | None,
    ) -> None:
        pass


#: The observer of a client nobody watches.
NO_OBSERVER: CallObserver = _Unobserved()


@dataclass(slots=True)
class _Call:
    """What is known of one call as it goes: its round trip and the upstream's RequestId."""

    seconds: float = 0.0
    request_id: str | None = None


@dataclass(slots=True)
class _ObservedCall(_Call):
    #: The error that said "no such job" (an answer, not a failure, to the caller).
    not_found: errors.UpstreamRejected | None = None


@dataclass(frozen=True, slots=True)
class SubmitJobRequest:
    """The parameters of SubmitIProductionJob (docs/upstream.md section 2.1); None means "not
    sent"."""

    function_name: str
    input: str | None = None
    output: str | None = None
    job_params: str | None = None
    user_data: str | None = None
    pipeline_id: str | None = None
    model_id: str | None = None
    notify_url: str | None = None
    schedule_params: str | None = None

    def params(self) -> dict[str, str]:
        named = {
            "FunctionName": self.function_name,
            "Input": self.input,
            "Output": self.output,
            "JobParams": self.job_params,
            "UserData": self.user_data,
            "PipelineId": self.pipeline_id,
            "ModelId": self.model_id,
            "NotifyUrl": self.notify_url,
            "ScheduleParams": self.schedule_params,
        }
        return {name: value for name, value in named.items() if value is not None}


class MpsClient:
    """Calls the MPS RPC API through an `httpx.AsyncClient` that carries the base URL, the
    timeouts and the signing `auth` (see `gateway.mps.signing.RpcSignatureV1`).

    Operation parameters travel in a form body (POST), the protocol parameters in the query
    string; the signature covers both.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
        observer: CallObserver = NO_OBSERVER,
    ) -> None:
        self._http = http
        self._observer = observer
        # The MPS region called: OSS URLs without an endpoint (oss://bucket/key) are in it.
        self._region = region
        self._clock = clock
        self._templates: dict[str, httpx.Request] = {}
        self._template_headers: dict[str, list[tuple[bytes, bytes]]] = {}

    async def query_job(
        self, job_id: str, *, held: AbstractAsyncContextManager[object] | None = None
    ) -> Job | None:
        """One snapshot of a job, or None when the upstream knows no such smart-production job.

        The call is made inside `held` (a budget slot), entered as late as it can be (the
        request built and signed) and left as soon as the answer has arrived (before it is
        decoded): the slot is held for the call's round trip and nothing else.
        """
        with self._observed(QUERY_ACTION) as call:
            try:
                body = await self._call(QUERY_ACTION, {"JobId": job_id}, call, held)
            except errors.UpstreamRejected as exc:
                if exc.upstream_code in NOT_FOUND_CODES:
                    call.not_found = exc
                    return None
                raise
            return decode_job(body, fetched_at=self._clock(), job_id=job_id, region=self._region)

    async def submit_job(
        self,
        request: SubmitJobRequest,
        *,
        held: AbstractAsyncContextManager[object] | None = None,
    ) -> SubmittedJob:
        """Submits a job, inside `held` (a budget slot, as for `query_job`); the answer names
        the new job's id. Never retried here: SubmitIProductionJob is not idempotent upstream.
        An error's `delivered` says whether the request may have reached the upstream."""
        with self._observed(SUBMIT_ACTION) as call:
            body = await self._call(SUBMIT_ACTION, request.params(), call, held)
            try:
                return decode_submit(body)
            except ValueError as exc:
                raise errors.UpstreamBadResponse(
                    f"{SUBMIT_ACTION} answered without a usable JobId: {exc}",
                    request_id=_text(body.get("RequestId")),
                ) from exc

    @contextmanager
    def _observed(self, action: str) -> Iterator[_ObservedCall]:
        """Tell the observer how the call made in the block ended (an error raised in it, a
        job not found, or an answer); cancellation is no outcome and is not told."""
        call = _ObservedCall()
        try:
            yield call
        except errors.UpstreamError as exc:
            request_id = exc.request_id or call.request_id
            self._observer.called(action, seconds=call.seconds, error=exc, request_id=request_id)
            raise
        else:
            self._observer.called(
                action, seconds=call.seconds, error=call.not_found, request_id=call.request_id
            )

    async def _call(
        self,
        action: str,
        params: Mapping[str, str],
        call: _Call,
        held: AbstractAsyncContextManager[object] | None = None,
    ) -> dict[str, object]:
        request = self._signed(action, params)
        async with held or contextlib.nullcontext():
            started = time.perf_counter()
            try:
                with _translate(action):
                    # Signed already: no auth again (the client's would sign a second time).
                    response = await self._http.send(request, auth=None)
            finally:
                call.seconds = time.perf_counter() - started
        call.request_id = _text(response.headers.get(REQUEST_ID_HEADER))
        body = _parse(action, response)
        call.request_id = _text(body.get("RequestId")) or call.request_id
        return body

    def _signed(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """The request of `action`, built and signed with the client's auth (no I/O).

        Every fetch waiting for a budget slot has signed its request already (so that the slot
        holds nothing but the round trip), and a burst of uncached ids signs hundreds at once:
        with `RpcSignatureV1` the request is made from a per-action template and the signed
        form, not built, parsed back and rebuilt by httpx (about 4 times less CPU)."""
        auth = self._http.auth
        if isinstance(auth, RpcSignatureV1):
            template = self._template(action)
            form = auth.signed_form(_protocol_params(action), params)
            return httpx.Request(
                "POST",
                template.url,
                headers=self._template_headers[action],
                content=encode_query(form.items()).encode(),
                extensions=dict(template.extensions),
            )
        request = self._http.build_request(
            "POST", "/", params=_protocol_params(action), data=dict(params)
        )
        if auth is None:
            return request
        # An httpx.Auth signs in a generator: its first request is the signed one (RPC
        # signing needs no answer to sign).
        return next(auth.sync_auth_flow(request))

    def _template(self, action: str) -> httpx.Request:
        """The unsigned, empty form POST of `action` as the client builds it (its URL, headers
        and timeout extension), made once per action."""
        template = self._templates.get(action)
        if template is None:
            template = self._http.build_request(
                "POST",
                "/",
                params=_protocol_params(action),
                headers={"content-type": FORM_CONTENT_TYPE},
            )
            self._templates[action] = template
            # Content-Length is the body's: httpx sets it for each request.
            self._template_headers[action] = [
                (name, value)
                for name, value in template.headers.raw
                if name.lower() != b"content-length"
            ]
        return template


def _protocol_params(action: str) -> dict[str, str]:
    """The query string of every call: what it is (the operation's own parameters go in the
    form body, with the credentials)."""
    return {"Action": action, "Version": API_VERSION, "Format": "JSON"}


@contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turns an httpx exception into the matching `UpstreamError` (first row of
    TRANSPORT_ERRORS that matches)."""
    try:
        yield
    except httpx.HTTPError as exc:
        for httpx_class, gateway_class in TRANSPORT_ERRORS:
            if isinstance(exc, httpx_class):
                raise gateway_class(
                    f"{action} failed before an answer arrived ({type(exc).__name__}).",
                    delivered=not isinstance(exc, UNDELIVERED_ERRORS),
                ) from exc
        raise  # pragma: no cover - the last row matches every httpx.HTTPError


def _parse(action: str, response: httpx.Response) -> dict[str, object]:
    """The JSON object of a successful answer, or the `UpstreamError` its status and code name."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        # RecursionError: nested deeper than the parser's stack, a garbled answer like any other.
        body = None
    if not isinstance(body, dict):
        raise errors.UpstreamBadResponse(
            f"{action} answered HTTP {response.status_code} with a body that is not a JSON object.",
            # The header carries the RequestId too: support tickets need it most for such bodies.
            request_id=_text(response.headers.get(REQUEST_ID_HEADER)),
            status_code=response.status_code,
        )
    if response.is_success:
        return body
    raise error_for(action, response.status_code, body, response.headers)


def error_for(
    action: str, status: int, body: Mapping[str, object], headers: Mapping[str, str]
) -> errors.UpstreamError:
    """The gateway error for an upstream error answer (docs/upstream.md section 4.3)."""
    code = _text(body.get("Code") or body.get("code")) or f"HTTP{status}"
    request_id = _text(body.get("RequestId") or body.get("requestId")) or _text(
        headers.get(REQUEST_ID_HEADER)
    )

    def make(kind: type[errors.UpstreamError], message: str) -> errors.UpstreamError:
        return kind(message, upstream_code=code, request_id=request_id, status_code=status)

    if code.startswith("Throttling") or status == 429:
        return errors.UpstreamThrottled(
            f"The upstream throttled {action} ({code}).",
            retry_after=_retry_after(headers),
            upstream_code=code,
            request_id=request_id,
            status_code=status,
        )
    if code.startswith(AUTH_CODE_PREFIXES + CLOCK_CODE_PREFIXES) or status in (401, 403):
        # The upstream message may quote the server's string to sign (with the AccessKeyId and
        # the security token): never pass it on.
        return make(
            errors.UpstreamAuthFailed,
            f"The upstream refused the gateway's credentials for {action} ({code}).",
        )
    if status >= 500 or code in UNAVAILABLE_CODES:
        return make(errors.UpstreamUnavailable, f"The upstream failed to answer {action} ({code}).")
    message = _text(body.get("Message") or body.get("message")) or "no message"
    return make(
        errors.UpstreamRejected, f"The upstream rejected {action} ({code}): {message[:300]}"
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name in ("x-acs-retry-after", "retry-after"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            continue
        # x-acs-retry-after is in milliseconds (the official SDK sleeps it / 1000 s); Retry-After
        # is in seconds.
        seconds = seconds / 1000 if name == "x-acs-retry-after" else seconds
        # Only a finite delay is a hint (and only a finite number can go out as JSON).
        if seconds > 0 and math.isfinite(seconds):
            return seconds
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
