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
from strawberry.extensions import MaskErrors, ParserCache
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import StreamExecutionResult

from gateway.api.context import Context
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
    - Limits: the document's token count (parser option, as MaxTokensLimiter sets it) and the
      given validation rules (query depth, aliases), added as AddValidationRules adds them. The
      rule classes must be made once and passed in: the validation cache is keyed by them.
    - Unexpected errors are masked (Strawberry's MaskErrors), each logged with a correlation id
      that the masked error carries too.
    - Errors raised by GraphQL itself get a code, as Apollo Server gives them, so that clients can
      branch on `extensions.code` for every error.

    One extension rather than four (MaxTokensLimiter, AddValidationRules, MaskErrors, codes):
    Strawberry pays for every extension on every request, at every step of the operation, and on
    a cached query that overhead measured as large as the query's own execution.
    """

    def __init__(
        self, max_tokens: int, validation_rules: Sequence[type[ASTValidationRule]]
    ) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message="Unexpected error.")
        self.max_tokens = max_tokens
        self.validation_rules = tuple(validation_rules)

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.validation_rules
        if isinstance(context.context, Context) and context.context.per_connection:
            # Strawberry makes one context per WebSocket connection: each operation gets its
            # own deadline and loader.
            context.context = context.context.for_operation()
        yield from super().on_operation()
        _add_codes(self.execution_context.result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        # A streamed result (each of a WebSocket operation's) goes to the client when this hook
        # yields, before `on_operation` ends. The codes go on first: an error masked next gets
        # INTERNAL_ERROR whatever it had.
        _add_codes(result)
        yield from super().on_stream_result(result)

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


class SyntaxErrorsAsResults(ParserCache):
    """Strawberry's ParserCache, except that a document that does not parse (the token limit
    included) is left to Strawberry's own parse step, which makes the syntax error the
    operation's result on every transport.

    ParserCache raises it from its hook instead, where `Schema.stream` (WebSocket operations)
    does not catch it: such an operation ended in a bare `complete` and a logged traceback. A
    failing document is parsed twice, which the token limit keeps cheap.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            context.graphql_document = None
        yield


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
