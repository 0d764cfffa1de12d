"""Schema extensions of our own: what a client sees of errors.

Expected failures are `GatewayError`s: their message and `extensions.code` go to the client.
Anything else is a bug or an unforeseen failure: it is logged with a correlation id and masked
("Unexpected error.", code INTERNAL_ERROR, the same correlation id), so no stack trace, upstream
text or secret leaves the process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence

from graphql import ASTValidationRule, GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import StreamExecutionResult

from gateway.api.context import Context
from gateway.api.cost import CostModel
from gateway.errors import GatewayError
from gateway.http_errors import BAD_REQUEST

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
      branch on `extensions.code` for every error.

    One extension rather than four (MaxTokensLimiter, AddValidationRules, MaskErrors, codes):
    Strawberry pays for every extension on every request, at every step of the operation, and on
    a cached query that overhead measured as large as the query's own execution.
    """

    def __init__(
        self,
        max_tokens: int,
        validation_rules: Sequence[type[ASTValidationRule]],
        cost: CostModel | None = None,
    ) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")
        self.max_tokens = max_tokens
        self.validation_rules = tuple(validation_rules)
        self.cost = cost

    def on_operation(self) -> Iterator[None]:
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
            _add_code(raised)
            raise
        _add_codes(self.execution_context.result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        # A streamed result (each of a WebSocket operation's) goes to the client when this hook
        # yields, before `on_operation` ends. The codes go on first: an error masked next gets
        # INTERNAL_ERROR whatever it had.
        _add_codes(result)
        yield from super().on_stream_result(result)

    def on_execute(self) -> Iterator[None]:
        # Here, not in validation: the document is valid (so the walk may trust its types and
        # fragments) and the variables are known. Raised, Strawberry answers it as it answers
        # a validation error, for a query and for a subscription alike.
        context = self.execution_context
        if self.cost is not None and context.graphql_document is not None:
            self.cost.check(context.graphql_document, context.operation_name, context.variables)
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
        return masked


def _add_codes(result: object) -> None:
    for error in getattr(result, "errors", None) or ():
        _add_code(error)


def _add_code(error: GraphQLError) -> None:
    if "code" in (error.extensions or {}):
        return
    original = error.original_error
    if isinstance(error, GraphQLSyntaxError):
        code = "GRAPHQL_PARSE_FAILED"
    elif original is None:
        code = "GRAPHQL_VALIDATION_FAILED"
    elif isinstance(original, _REQUEST_ERRORS):
        code = BAD_REQUEST
    else:
        code = "BAD_USER_INPUT"
    error.extensions = {**(error.extensions or {}), "code": code}
