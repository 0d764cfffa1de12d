"""The GraphQL schema, with the Strawberry extensions the gateway relies on."""

from __future__ import annotations

import strawberry
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)

from gateway.api.extensions import ErrorCodes, MaskUnexpectedErrors
from gateway.api.query import Query
from gateway.settings import GatewaySettings


def build_schema(settings: GatewaySettings) -> strawberry.Schema:
    """The schema. Parsing and validation results are cached (a bounded LRU keyed by the query
    text): on a warm gateway most requests skip both, the costliest steps of a small query."""
    return strawberry.Schema(
        query=Query,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
            lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
            lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
            MaskUnexpectedErrors,
            ErrorCodes,
        ],
    )
