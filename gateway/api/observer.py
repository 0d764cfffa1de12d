"""`ApiObserver`: what the API layer tells whoever watches it (metrics), and how an
operation's outcome is named."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Final, Protocol

from graphql import GraphQLError

__all__ = ["CLIENT_CODES", "NO_OBSERVER", "PERSISTED_OUTCOMES", "ApiObserver", "outcome_of"]

#: Codes of errors that are the request's own fault: an operation that fails with these only
#: says nothing about the gateway's health.
CLIENT_CODES: Final = frozenset(
    {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
        "BAD_REQUEST",
        "INVALID_JOB_ID",
        "TOO_MANY_IDS",
        "INVALID_ARGUMENT",
        "QUERY_TOO_COMPLEX",
        "TOO_MANY_OPERATIONS",
        "OPERATION_NAME_REQUIRED",
        "UNKNOWN_OPERATION_NAME",
    }
)


#: What happened to a request naming a persisted query, or sending text with its hash:
#: `hit` (the hash found its document), `miss` (PERSISTED_QUERY_NOT_FOUND), `registered`,
#: `not_registered_rate_limited` / `not_registered_bytes_limited` (over this process's
#: registration limits: it ran, unregistered), `not_registered_invalid` (too large, or no
#: parse: it ran, unregistered), `refused` (any other PERSISTED_QUERY_* error).
PERSISTED_OUTCOMES: Final = (
    "hit",
    "miss",
    "registered",
    "not_registered_rate_limited",
    "not_registered_bytes_limited",
    "not_registered_invalid",
    "refused",
)


def outcome_of(errors: Iterable[GraphQLError]) -> str:
    """`ok` (no error), `client_error` (only errors of CLIENT_CODES) or `error`."""
    outcome = "ok"
    for error in errors:
        if (error.extensions or {}).get("code") not in CLIENT_CODES:
            return "error"
        outcome = "client_error"
    return outcome


class ApiObserver(Protocol):
    """Told of each GraphQL operation as it ends, and of each subscription while it runs."""

    def operation(self, operation_type: str, outcome: str, seconds: float | None) -> None:
        """An operation of `operation_type` (query, mutation, subscription; none when no
        operation could be read from the request) ended with `outcome` (see `outcome_of`)
        after `seconds` (None for a subscription: its length is the client's choice)."""
        ...

    def persisted_query(self, outcome: str) -> None:
        """A request named a persisted query, or registered one, with `outcome` (one of
        PERSISTED_OUTCOMES)."""
        ...

    def subscription(self, transport: str) -> AbstractContextManager[object]:
        """Entered while a subscription is served over `transport` (websocket, sse, http)."""
        ...


class _Unobserved:
    __slots__ = ()

    def operation(self, operation_type: str, outcome: str, seconds: float | None) -> None:
        pass

    def persisted_query(self, outcome: str) -> None:
        pass

    def subscription(self, transport: str) -> AbstractContextManager[object]:
        return nullcontext()


#: The observer of an API nobody watches.
NO_OBSERVER: ApiObserver = _Unobserved()
