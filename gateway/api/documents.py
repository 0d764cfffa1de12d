"""Parsing and validation of documents: cached, and off the event loop when long.

Both take time linear in a document, but not little: the longest documents the token limit lets
through take a tenth of a second or more (docs/bounded-requests.md). Spent on the event loop,
that time is every other request's wait. `Documents` parses and
validates a document longer than `THREAD_CHARS` in a worker thread instead, and the event loop
serves the other requests meanwhile (the interpreter hands the lock between threads every few
milliseconds). Shorter ones, the common case, stay on the loop, where they cost less than the
hop to a thread.

Results are cached (LRU) by the text and by the document, as Strawberry's ParserCache and
ValidationCache cache them; `DocumentCache` is the extension that replaces those two. A warm
gateway parses and validates a repeated query once; errors are not cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import lru_cache, partial

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from gateway.api.operations import select_operation

#: Documents longer than this (characters) are parsed and validated in a worker thread.
THREAD_CHARS = 4096


class Documents:
    """The parsed and validated documents of one schema, each LRU holding `maxsize` entries.
    Shared by every request; safe across threads (the caches are functools').

    Parsing obeys `max_tokens` (a longer document is a syntax error); validation applies
    `rules` (the classes, made once) plus the rules Strawberry adds to every validation.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        max_tokens: int,
        rules: tuple[type[ASTValidationRule], ...],
        maxsize: int = 1024,
    ) -> None:
        self._parse: Callable[[str], DocumentNode] = lru_cache(maxsize=maxsize)(
            partial(parse, max_tokens=max_tokens)
        )
        self._validate: Callable[[DocumentNode], list[GraphQLError]] = lru_cache(maxsize=maxsize)(
            partial(validate_document, schema, validation_rules=rules)
        )

    async def parse(self, query: str) -> DocumentNode:
        """The document of `query`; raises GraphQLSyntaxError as graphql-core's `parse`."""
        if len(query) > THREAD_CHARS:
            return await asyncio.to_thread(self._parse, query)
        return self._parse(query)

    async def parses(self, query: str) -> bool:
        """Whether `query` parses within the token limit (its document is cached when it does)."""
        try:
            await self.parse(query)
        except GraphQLError:
            return False
        return True

    async def validate(self, document: DocumentNode) -> list[GraphQLError]:
        """The validation errors of `document` (empty: valid). The list is shared: read it."""
        source = document.loc.source.body if document.loc else ""
        if len(source) > THREAD_CHARS:
            return await asyncio.to_thread(self._validate, document)
        return self._validate(document)


class DocumentCache(SchemaExtension):
    """Parses and validates each operation's document through a shared `Documents`; Strawberry
    then skips its own parsing and validation (it does both only when nothing has)."""

    def __init__(self, documents: Documents) -> None:
        super().__init__()
        self.documents = documents

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.query is not None:
            context.graphql_document = await self.documents.parse(context.query)
            # Before Strawberry picks the operation (it would run the first of several). The
            # name as the client gave it: `operation_name` falls back to the first operation's.
            select_operation(context.graphql_document, context._provided_operation_name)
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            context.pre_execution_errors = await self.documents.validate(context.graphql_document)
        yield
