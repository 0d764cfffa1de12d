"""The GraphQL schema, with the Strawberry extensions the gateway relies on."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, ValidationCache
from strawberry.types import ExecutionContext

from gateway.api.extensions import OperationPolicy, SyntaxErrorsAsResults
from gateway.api.query import Query
from gateway.api.subscription import Subscription
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, minus its habit of logging every error with a traceback: expected
    errors (a bad id, a throttled upstream) are answers, not incidents. Unexpected ones are
    logged once, with their correlation id, by `OperationPolicy`."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            logger.debug("GraphQL error at %s: %s", error.path, error.message)


def build_schema(settings: GatewaySettings) -> strawberry.Schema:
    """The schema. Parsing and validation results are cached (a bounded LRU keyed by the query
    text): on a warm gateway most requests skip both, the costliest steps of a small query."""
    # The limits' validation rules are made once, here. Each QueryDepthLimiter or
    # MaxAliasesLimiter makes a new rule class when it is constructed, and the validation cache
    # is keyed by the document AND the rules: limiters constructed per request (as factories
    # are) would make every request miss the cache and validate again.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    return GatewaySchema(
        query=Query,
        subscription=Subscription,
        extensions=[
            lambda: SyntaxErrorsAsResults(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
            lambda: OperationPolicy(settings.max_tokens, limit_rules),
        ],
    )
