"""Schema extensions of our own: what a client sees of errors.

Expected failures are `GatewayError`s: their message and `extensions.code` go to the client.
Anything else is a bug or an unforeseen failure: it is logged with a correlation id and masked
("Unexpected error.", code INTERNAL_ERROR, the same correlation id), so no stack trace, upstream
text or secret leaves the process. Every error also carries the request's id
(`extensions.requestId`, the one its log lines and its `x-request-id` header carry).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence

from graphql import ASTValidationRule, GraphQLError, GraphQLSyntaxError, OperationDefinitionNode
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import StreamExecutionResult
from strawberry.utils.operation import get_operation_type

from gateway.api.context import Context
from gateway.api.cost import CostModel
from gateway.api.observer import NO_OBSERVER, ApiObserver, outcome_of
from gateway.errors import DEFAULT_RETRY_AFTER, DeadlineExceeded, GatewayError
from gateway.http_errors import BAD_REQUEST
from gateway.observe.requests import current_request, current_request_id, describe_operation

logger = logging.getLogger(__name__)


#: Strawberry's refusals of a request it cannot run: no query, or no operation to run in it.
#: HTTP answers them 400 before executing; over WebSocket they are the operation's errors.
_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError)


def is_unexpected(error: GraphQLError) -> bool:
    """Whether an error comes from a resolver failing in a way the gateway did not plan for."""
    original = error.original_error
    return original is not None and not isinstance(
        original, (GatewayError, GraphQLError, *_REQUEST_ERRORS)
    )


class OperationPolicy(MaskErrors):
    """What the gateway enforces on every operation, and what clients see of its errors.

    - Deadlines: each operation of a WebSocket connection gets a context of its own.
    - Limits: the document's token count (parser option, as MaxTokensLimiter sets it), the
      given validation rules (all of them: they replace Strawberry's default list; see
      `gateway.api.limits`), and, once the document is valid and the variables known, the
      operation's cost (`gateway.api.cost`): over the limit, it is refused unrun with
      QUERY_TOO_COMPLEX. The rule classes must be made once and passed in: the validation
      cache is keyed by them.
    - Unexpected errors are masked (Strawberry's MaskErrors), each logged with a correlation id
      that the masked error carries too.
    - Errors raised by GraphQL itself get a code, as Apollo Server gives them, so that clients can
      branch on `extensions.code` for every error; every error gets the request's id.
    - Each operation's type and outcome are told to `observer` (metrics), and written down for
      the request's access log line.

    One extension rather than four (MaxTokensLimiter, AddValidationRules, MaskErrors, codes):
    Strawberry pays for every extension on every request, at every step of the operation, and on
    a cached query that overhead measured as large as the query's own execution.
    """

    def __init__(
        self,
        max_tokens: int,
        validation_rules: Sequence[type[ASTValidationRule]],
        cost: CostModel | None = None,
        observer: ApiObserver = NO_OBSERVER,
    ) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")
        self.max_tokens = max_tokens
        self.validation_rules = tuple(validation_rules)
        self.cost = cost
        self.observer = observer
        #: Errors of the results streamed so far (a subscription's).
        self._streamed: list[GraphQLError] = []

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = self.validation_rules
        if isinstance(context.context, Context) and context.context.per_connection:
            # Strawberry makes one context per WebSocket connection: each operation gets its
            # own deadline and loader.
            context.context = context.context.for_operation()
        try:
            yield from super().on_operation()
        except GraphQLError as raised:
            # A syntax error raised by the parse hook (`DocumentCache`, the token limit
            # included) leaves the operation as an exception, before any result exists; the
            # schema makes this same error object the result's only error (`execute`, and
            # `GatewaySchema.stream`).
            _add_code(raised, current_request_id())
            self._observe(started, [raised])
            raise
        except GatewayError as raised:
            # Refused by a hook (the cost limit): Strawberry makes it the result's error once
            # the operation has ended (and `GatewaySchema.process_errors` adds the id).
            self._observe(started, [GraphQLError(raised.message, extensions=raised.extensions)])
            raise
        result = self.execution_context.result
        _add_codes(result, current_request_id())
        self._observe(started, [*self._streamed, *(getattr(result, "errors", None) or ())])

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        # A streamed result (each of a WebSocket operation's) goes to the client when this hook
        # yields, before `on_operation` ends. The codes go on first: an error masked next gets
        # INTERNAL_ERROR whatever it had (and keeps the request id, which masking copies).
        _add_codes(result, current_request_id())
        self._streamed.extend(getattr(result, "errors", None) or ())
        yield from super().on_stream_result(result)

    def _observe(self, started: float, errors: Sequence[GraphQLError]) -> None:
        operation_type = self._operation_type()
        seconds = None if operation_type == "subscription" else time.perf_counter() - started
        self.observer.operation(operation_type, outcome_of(errors), seconds)
        described = describe_operation(operation_type, self._operation_name())
        info = current_request()
        if info is not None:
            info.counted = True
            info.operation = described
        context = self.execution_context.context
        if isinstance(context, Context) and context.cacheability is not None:
            context.cacheability.ended(operation_type, described, len(errors))

    def _operation_type(self) -> str:
        document = self.execution_context.graphql_document
        if document is None:
            return "none"
        try:
            return get_operation_type(document, self.execution_context.operation_name).value
        except Exception:  # no such operation, or several and none named: nothing ran
            return "none"

    def _operation_name(self) -> str | None:
        name = self.execution_context.operation_name
        document = self.execution_context.graphql_document
        if name is None and document is not None:
            operations = [
                definition
                for definition in document.definitions
                if isinstance(definition, OperationDefinitionNode)
            ]
            if len(operations) == 1 and operations[0].name is not None:
                name = operations[0].name.value
        return name

    def on_execute(self) -> Iterator[None]:
        # Here, not in validation: the document is valid (so the walk may trust its types and
        # fragments) and the variables are known. Raised, Strawberry answers it as it answers
        # a validation error, for a query and for a subscription alike.
        context = self.execution_context
        request = context.context
        if isinstance(request, Context) and time.monotonic() >= request.deadline:
            # Parsing and validating on a loaded process took the rest of its time: nothing
            # it would run could answer before its deadline.
            raise DeadlineExceeded(
                "the request waited to run",
                timeout=request.timeout,
                retry_after=DEFAULT_RETRY_AFTER,
            )
        if self.cost is not None and context.graphql_document is not None:
            self.cost.check(context.graphql_document, context.operation_name, context.variables)
        request = context.context
        if isinstance(request, Context) and request.rate_limit is not None:
            # After the cost check: an operation refused unrun costs its tenant nothing.
            request.rate_limit.check(request.caller)
        yield

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        correlation_id = uuid.uuid4().hex
        logger.error(
            "Unexpected error at %s (correlation id %s)",
            ".".join(str(key) for key in error.path or ()),
            correlation_id,
            exc_info=error.original_error,
        )
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_ERROR", "correlationId": correlation_id}
        request_id = (error.extensions or {}).get("requestId")
        if request_id is not None:
            masked.extensions["requestId"] = request_id
        return masked


def add_request_id(errors: Sequence[GraphQLError]) -> None:
    """Give each of `errors` the id of the request being served, if it has none yet."""
    request_id = current_request_id()
    if request_id is None:
        return
    for error in errors:
        if "requestId" not in (error.extensions or {}):
            error.extensions = {**(error.extensions or {}), "requestId": request_id}


def _add_codes(result: object, request_id: str | None) -> None:
    for error in getattr(result, "errors", None) or ():
        _add_code(error, request_id)


def _add_code(error: GraphQLError, request_id: str | None) -> None:
    extensions = error.extensions or {}
    if "code" not in extensions:
        extensions = {**extensions, "code": _code_of(error)}
    if request_id is not None and "requestId" not in extensions:
        extensions = {**extensions, "requestId": request_id}
    error.extensions = extensions


def _code_of(error: GraphQLError) -> str:
    """The code of an error GraphQL itself raised, as Apollo Server names it."""
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    original = error.original_error
    if original is None:
        return "GRAPHQL_VALIDATION_FAILED"
    if isinstance(original, _REQUEST_ERRORS):
        return BAD_REQUEST
    return "BAD_USER_INPUT"
