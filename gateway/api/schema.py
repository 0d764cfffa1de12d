"""The GraphQL schema, with the Strawberry extensions the gateway relies on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.api.cost import CostModel
from gateway.api.documents import DocumentCache, Documents
from gateway.api.extensions import OperationPolicy, add_request_id
from gateway.api.limits import validation_rules
from gateway.api.mutation import Mutation
from gateway.api.observer import NO_OBSERVER, ApiObserver
from gateway.api.pacing import PacedExecution
from gateway.api.query import Query
from gateway.api.subscription import Subscription
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, minus its habit of logging every error with a traceback: expected
    errors (a bad id, a throttled upstream) are answers, not incidents. Unexpected ones are
    logged once, with their correlation id, by `OperationPolicy`."""

    #: The parsed and validated documents its operations share (set by `build_schema`).
    documents: Documents

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors raised by a hook before the operation ran reach only this method.
        add_request_id(errors)
        for error in errors:
            logger.debug("GraphQL error at %s: %s", error.path, error.message)

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """Strawberry's `stream` (what WebSocket operations run), answering a document that
        does not parse with a result, as `execute` does.

        A parse hook (`DocumentCache`) raises the syntax error, the token limit's included;
        `execute` makes it the result's error, `stream` let it escape: the operation ended in a
        bare `complete` and an ERROR traceback. `OperationPolicy` has given it its code.
        """
        results = await super().stream(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            operation_extensions,
            allowed_operation_types,
        )
        return _syntax_error_as_result(results)


async def _syntax_error_as_result(results: StreamResult) -> StreamResult:
    try:
        first = await anext(results)
    except StopAsyncIteration:
        return
    except GraphQLError as error:
        # Nothing else escapes before the first result: Strawberry turns every later failure,
        # and every failure of validation or execution hooks, into a result of its own.
        yield PreExecutionError(data=None, errors=[error])
        return
    yield first
    async for result in results:
        yield result


def build_schema(
    settings: GatewaySettings,
    *,
    observer: ApiObserver = NO_OBSERVER,
    extensions: Sequence[Callable[[], SchemaExtension]] = (),
) -> GatewaySchema:
    """The schema, telling `observer` of each operation, with `extensions` (tracing) around
    the gateway's own. Parsing and validation results are cached (a bounded LRU keyed by the query
    text): on a warm gateway most requests skip both, the costliest steps of a small query;
    long documents are parsed and validated off the event loop (`gateway.api.documents`).
    Every operation is bounded before it runs (`gateway.api.limits`, `gateway.api.cost`) and
    paced while it runs (`gateway.api.pacing`)."""
    # The validation rules are made once, here: the validation cache is keyed by the document
    # AND the rule classes, and rules made per request would make every request miss it.
    rules = validation_rules(max_depth=settings.max_query_depth, max_aliases=settings.max_aliases)
    schema = GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=PacedExecution,
        extensions=[
            *extensions,
            lambda: DocumentCache(documents),
            lambda: OperationPolicy(settings.max_tokens, rules, cost, observer),
        ],
    )
    # Both read the schema's types, so they are made after it; the factories above run per
    # request, later.
    documents = Documents(schema._schema, max_tokens=settings.max_tokens, rules=rules)
    schema.documents = documents
    cost = CostModel(
        schema._schema,
        limit=settings.max_cost,
        max_ids=settings.max_ids,
        max_page_size=settings.max_page_size,
    )
    return schema
