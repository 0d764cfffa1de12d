"""Every error a client of the gateway can meet, with a stable machine code.

    GatewayError                 (code: each subclass has one; ends up in extensions.code)
    ├── InvalidJobId             INVALID_JOB_ID        a job id the upstream could never accept
    ├── TooManyIds               TOO_MANY_IDS          a jobs(ids) list over the limit
    ├── InvalidArgument          INVALID_ARGUMENT      a field argument outside its documented range
    ├── BudgetExhausted          BUDGET_EXHAUSTED      no upstream call slot before the deadline
    ├── QueryTooComplex          QUERY_TOO_COMPLEX     an operation estimated to cost over the limit
    ├── OperationNameRequired    OPERATION_NAME_REQUIRED  several operations and no operationName
    ├── UnknownOperationName     UNKNOWN_OPERATION_NAME   an operationName the document lacks
    ├── DeadlineExceeded         DEADLINE_EXCEEDED     the request's deadline passed mid-answer
    ├── Overloaded               OVERLOADED            more requests than the process runs in time
    ├── ShuttingDown             SHUTTING_DOWN         the process is stopping; another will answer
    ├── Unauthenticated          UNAUTHENTICATED       no credential, or one the gateway refuses
    ├── Forbidden                FORBIDDEN             the caller lacks the scope it needs
    ├── IdempotencyKeyReused     IDEMPOTENCY_KEY_REUSED  a key used for another submission
    ├── SubmitOutcomeUnknown     SUBMIT_OUTCOME_UNKNOWN  a submit's answer was lost: no retry
    ├── RateLimited              RATE_LIMITED          the caller's tenant is over its rate
    └── UpstreamError                                  the upstream call failed; with its RequestId
        ├── UpstreamThrottled    UPSTREAM_THROTTLED    the cloud said Throttling*
        ├── UpstreamUnavailable  UPSTREAM_UNAVAILABLE  5xx, connection refused or dropped
        ├── UpstreamTimeout      UPSTREAM_TIMEOUT      connect or read timeout
        ├── UpstreamAuthFailed   UPSTREAM_AUTH_FAILED  bad key, signature, token or permission
        ├── UpstreamRejected     UPSTREAM_REJECTED     a 4xx the gateway has no better name for
        └── UpstreamBadResponse  UPSTREAM_BAD_RESPONSE a body or field the gateway cannot decode

Each class carries the values a client needs (`jobId`, `retryAfter`, `upstreamRequestId`);
`extensions` is what graphql-core copies into the GraphQL error (the API layer adds `requestId`,
the gateway's id of the request, to every error). Messages are sentences built from those values
and never contain a credential. Programmer errors (TypeError, ...) stay outside this tree and are
masked by the API layer.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Root of every error the gateway reports to its clients on purpose."""

    code: ClassVar[str] = "GATEWAY_ERROR"
    #: Whether the same call may succeed when tried again later.
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def extensions(self) -> dict[str, Any]:
        """The GraphQL `extensions` of this error: the code plus every known context value."""
        return {"code": self.code, **{k: v for k, v in self.context().items() if v is not None}}

    def context(self) -> dict[str, Any]:
        """Values a client needs to act on this error, keyed by their GraphQL names."""
        return {}


class InvalidJobId(GatewayError):
    code = "INVALID_JOB_ID"

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"Job id {job_id[:80]!r} is invalid: {reason}.")
        self.job_id = job_id

    def context(self) -> dict[str, Any]:
        return {"jobId": self.job_id[:80]}


class TooManyIds(GatewayError):
    code = "TOO_MANY_IDS"

    def __init__(self, received: int, limit: int) -> None:
        super().__init__(f"Expected at most {limit} job ids in one request, received {received}.")
        self.received = received
        self.limit = limit

    def context(self) -> dict[str, Any]:
        return {"limit": self.limit, "received": self.received}


#: The longest rendering of a client's value that an error message repeats.
_LONGEST_SHOWN = 80


class InvalidArgument(GatewayError):
    """A field argument the schema types correctly but whose value is out of range."""

    code = "INVALID_ARGUMENT"

    def __init__(self, argument: str, expected: str, received: object) -> None:
        shown = repr(received)
        if len(shown) > _LONGEST_SHOWN:
            # A client's value is echoed, but not a megabyte of it.
            shown = shown[: _LONGEST_SHOWN - 3] + "..."
        super().__init__(f"Expected {argument} {expected}, received {shown}.")
        self.argument = argument
        self.received = received

    def context(self) -> dict[str, Any]:
        return {"argument": self.argument}


#: Seconds a client is told to wait when nothing better is known: the upstream's window.
DEFAULT_RETRY_AFTER = 1.0


class BudgetExhausted(GatewayError):
    code = "BUDGET_EXHAUSTED"
    retryable = True

    def __init__(self, retry_after: float) -> None:
        retry_after = max(0.0, retry_after)
        super().__init__(
            "The upstream call budget has no free slot before this request's deadline; "
            f"retry in {retry_after:.2f} s."
        )
        self.retry_after = retry_after

    def context(self) -> dict[str, Any]:
        return {"retryAfter": round(self.retry_after, 3)}


class ShuttingDown(GatewayError):
    """This process is stopping: it grants no more upstream calls. Another process (or this
    one, restarted) will answer a retry."""

    code = "SHUTTING_DOWN"
    retryable = True

    def __init__(self, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(f"The gateway is shutting down; retry in {retry_after:.2f} s.")
        self.retry_after = retry_after

    def context(self) -> dict[str, Any]:
        return {"retryAfter": round(self.retry_after, 3)}


class QueryTooComplex(GatewayError):
    """An operation refused before execution: its estimated cost (see `gateway.api.cost`) is over
    the gateway's limit."""

    code = "QUERY_TOO_COMPLEX"

    def __init__(self, cost: int, limit: int) -> None:
        super().__init__(
            f"Expected an operation costing at most {limit}, received one costing {cost}: ask for "
            "fewer ids, files or aliased fields, or split the operation."
        )
        self.cost = cost
        self.limit = limit

    def context(self) -> dict[str, Any]:
        return {"cost": self.cost, "limit": self.limit}


class OperationNameRequired(GatewayError):
    """A document of several operations, sent without `operationName`: running the first one
    would answer a question the client may not have asked."""

    code = "OPERATION_NAME_REQUIRED"

    def __init__(self, names: list[str | None]) -> None:
        shown = ", ".join("(anonymous)" if name is None else name for name in names[:10])
        more = ", ..." if len(names) > 10 else ""
        super().__init__(
            f"Expected an operationName naming one of the document's {len(names)} operations "
            f"({shown}{more}), received none."
        )
        self.names = names

    def context(self) -> dict[str, Any]:
        return {"operations": [name for name in self.names[:10] if name is not None]}


class UnknownOperationName(GatewayError):
    """An `operationName` that names no operation of the document."""

    code = "UNKNOWN_OPERATION_NAME"

    def __init__(self, name: str, names: list[str | None]) -> None:
        known = [known for known in names[:10] if known is not None]
        expected = (
            f"one of {', '.join(known)}{', ...' if len(names) > 10 else ''}"
            if known
            else "none (the document's operations have no name)"
        )
        super().__init__(
            f"Expected an operationName naming an operation of the document, {expected}; "
            f"received {name[:_LONGEST_SHOWN]!r}."
        )
        self.name = name

    def context(self) -> dict[str, Any]:
        return {"operationName": self.name[:_LONGEST_SHOWN]}


class DeadlineExceeded(GatewayError):
    """The request's deadline (`GATEWAY_REQUEST_DEADLINE`, or less with `x-request-timeout`)
    passed while its answer was being made: an upstream call under way (its answer will be
    cached: `retry_after` says when to ask again), another process's call it waited for, or its
    own execution (`timeout` given: ask for less, or allow more time)."""

    code = "DEADLINE_EXCEEDED"
    retryable = True

    def __init__(
        self, what: str, *, timeout: float | None = None, retry_after: float | None = None
    ) -> None:
        deadline = (
            "request's deadline" if timeout is None else f"request's deadline of {timeout:g} s"
        )
        advice = (
            "ask for less, or allow more time"
            if retry_after is None
            else f"retry in {max(0.0, retry_after):.2f} s"
        )
        super().__init__(f"The {deadline} passed while {what}; {advice}.")
        self.timeout = timeout
        self.retry_after = None if retry_after is None else max(0.0, retry_after)

    def context(self) -> dict[str, Any]:
        retry_after = None if self.retry_after is None else round(self.retry_after, 3)
        return {"retryAfter": retry_after}


class Unauthenticated(GatewayError):
    """The request carries no credential the gateway accepts. The message says what was wrong
    in general terms (expired, wrong audience...), never the credential itself; HTTP answers
    it 401 with `WWW-Authenticate`, a WebSocket closes with 4403."""

    code = "UNAUTHENTICATED"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Authentication failed: {reason}")
        self.reason = reason


class Forbidden(GatewayError):
    """The caller is authenticated but may not do this: it lacks `scope`."""

    code = "FORBIDDEN"

    def __init__(self, scope: str, action: str) -> None:
        super().__init__(f"Expected a caller with the scope {scope} to {action}.")
        self.scope = scope

    def context(self) -> dict[str, Any]:
        return {"scope": self.scope}


class RateLimited(GatewayError):
    """The caller's tenant sent more operations than `GATEWAY_TENANT_QPS` allows."""

    code = "RATE_LIMITED"
    retryable = True

    def __init__(self, limit: float, retry_after: float) -> None:
        retry_after = max(0.0, retry_after)
        super().__init__(
            f"Expected at most {limit:g} operations per second from one tenant, received more; "
            f"retry in {retry_after:.2f} s."
        )
        self.limit = limit
        self.retry_after = retry_after

    def context(self) -> dict[str, Any]:
        return {"retryAfter": round(self.retry_after, 3), "limit": self.limit}


class IdempotencyKeyReused(GatewayError):
    """An idempotency key the same tenant already used, within its lifetime, for a submission
    with other parameters: the key names one submission only."""

    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, ttl: float) -> None:
        super().__init__(
            "Expected the same parameters as the earlier submitJob with this idempotency key "
            f"(keys are remembered for {ttl:g} s), received different ones: use a new key for "
            "a new job."
        )


class SubmitOutcomeUnknown(GatewayError):
    """A submission reached the upstream and its answer was lost (a timeout, a dropped
    connection, a 5xx, a garbled body): the job may or may not exist. SubmitIProductionJob is not
    idempotent upstream, so the gateway never submits it again on its own; with an idempotency
    key, the key stays in doubt (this same error) until it expires."""

    code = "SUBMIT_OUTCOME_UNKNOWN"

    def __init__(self, *, cause: str | None, upstream_request_id: str | None, keyed: bool) -> None:
        advice = (
            "this idempotency key keeps answering so until it expires; submit with a new key "
            "only once you are sure the job was not created"
            if keyed
            else "submit again only once you are sure the job was not created"
        )
        super().__init__(
            "The upstream may or may not have created the job: its answer to the submission "
            f"was lost ({cause or 'no answer'}); {advice}."
        )
        self.cause = cause
        self.upstream_request_id = upstream_request_id

    def context(self) -> dict[str, Any]:
        return {"upstreamCode": self.cause, "upstreamRequestId": self.upstream_request_id}


class Overloaded(GatewayError):
    """This process has more requests than it can run in time (one waited longer than
    `GATEWAY_ADMISSION_MAX_WAIT` to start, or `GATEWAY_MAX_CONCURRENT_REQUESTS` run already):
    this one was refused before it ran, at once, rather than let in to answer late. Another
    process (or this one, soon) will answer a retry."""

    code = "OVERLOADED"
    retryable = True

    def __init__(self, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(
            f"The gateway has more requests than it can run in time; retry in {retry_after:.2f} s."
        )
        self.retry_after = retry_after

    def context(self) -> dict[str, Any]:
        return {"retryAfter": round(self.retry_after, 3)}


class UpstreamError(GatewayError):
    """The upstream call did not give a usable answer."""

    code = "UPSTREAM_ERROR"

    def __init__(
        self,
        message: str,
        *,
        upstream_code: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        delivered: bool = True,
    ) -> None:
        super().__init__(message)
        self.upstream_code = upstream_code
        self.request_id = request_id
        self.status_code = status_code
        #: False only when the request surely never reached the upstream (no connection was
        #: made): what a non-idempotent call may then be sent again after.
        self.delivered = delivered

    def context(self) -> dict[str, Any]:
        return {
            "upstreamCode": self.upstream_code,
            # `requestId` is the gateway's own (every error carries it): this is the cloud's.
            "upstreamRequestId": self.request_id,
            "httpStatus": self.status_code,
        }


class UpstreamThrottled(UpstreamError):
    code = "UPSTREAM_THROTTLED"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def context(self) -> dict[str, Any]:
        # Always a hint: the upstream's own when it sent one, else its window.
        retry_after = DEFAULT_RETRY_AFTER if self.retry_after is None else self.retry_after
        return {**super().context(), "retryAfter": retry_after}


class UpstreamUnavailable(UpstreamError):
    code = "UPSTREAM_UNAVAILABLE"
    retryable = True


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"
    retryable = True


class UpstreamAuthFailed(UpstreamError):
    code = "UPSTREAM_AUTH_FAILED"


class UpstreamRejected(UpstreamError):
    code = "UPSTREAM_REJECTED"


class UpstreamBadResponse(UpstreamError):
    code = "UPSTREAM_BAD_RESPONSE"
    # A garbled body is usually a passing fault (a proxy, a truncated read); one more try is cheap.
    retryable = True
