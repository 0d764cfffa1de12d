"""Persisted queries: a request names its document by sha256 instead of sending its text.

Two modes, read from the request's `extensions.persistedQuery` (`{"version": 1,
"sha256Hash": <64 hex digits>}`, Apollo's protocol), over HTTP (POST and GET) and in WebSocket
subscribe payloads alike:

- **Automatic persisted queries** (APQ): a hash the store knows runs its document; an unknown
  one is `PERSISTED_QUERY_NOT_FOUND` (message `PersistedQueryNotFound`, HTTP 200, as Apollo
  Server answers, so that Apollo Client sends the text with the hash); text sent with its hash
  is registered (when it parses within the token limit and is at most `max_document_bytes`),
  then runs. Turned off, a hash is `PERSISTED_QUERY_NOT_SUPPORTED` (Apollo Client then sends
  text only).
- **Trusted documents**: only the documents of a manifest run. A hash of the manifest runs its
  document; another hash is `PERSISTED_QUERY_NOT_IN_LIST` (404); text runs only if it is one of
  the manifest's documents, else `PERSISTED_QUERY_REQUIRED` (403). Nothing is registered.

Text whose sha256 is not the hash sent with it is `PERSISTED_QUERY_HASH_MISMATCH` (400), and an
`extensions.persistedQuery` that is not of the protocol's shape is `PERSISTED_QUERY_INVALID`
(400): reading it is bounded work whatever a client sends. The view hands every request's
query and extensions to `PersistedQueries.resolve` before anything else reads them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from graphql import GraphQLError

from gateway.api.client_json import describe
from gateway.api.observer import NO_OBSERVER, ApiObserver
from gateway.observe.requests import current_request
from gateway.persisted.registrations import RegistrationLimits

__all__ = [
    "PERSISTED_QUERY_HASH_MISMATCH",
    "PERSISTED_QUERY_INVALID",
    "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_NOT_IN_LIST",
    "PERSISTED_QUERY_NOT_SUPPORTED",
    "PERSISTED_QUERY_REQUIRED",
    "DocumentStore",
    "PersistedQueries",
    "PersistedQueryError",
    "document_hash",
]

#: 200: a hash no process has registered (or whose registration expired): send the text too.
PERSISTED_QUERY_NOT_FOUND: Final = "PERSISTED_QUERY_NOT_FOUND"
#: 200: a hash sent to a gateway whose automatic persisted queries are off (GATEWAY_APQ=off).
PERSISTED_QUERY_NOT_SUPPORTED: Final = "PERSISTED_QUERY_NOT_SUPPORTED"
#: 400: text sent with a hash that is not its sha256.
PERSISTED_QUERY_HASH_MISMATCH: Final = "PERSISTED_QUERY_HASH_MISMATCH"
#: 400: an `extensions.persistedQuery` not of the protocol's shape.
PERSISTED_QUERY_INVALID: Final = "PERSISTED_QUERY_INVALID"
#: 404, trusted documents: a hash the manifest does not hold.
PERSISTED_QUERY_NOT_IN_LIST: Final = "PERSISTED_QUERY_NOT_IN_LIST"
#: 403, trusted documents: text that is none of the manifest's documents.
PERSISTED_QUERY_REQUIRED: Final = "PERSISTED_QUERY_REQUIRED"

#: The protocol's one version.
VERSION: Final = 1

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

#: Headers of the answers that say "send it again differently": no cache may keep them, or the
#: request that follows a registration would keep getting the old answer (Apollo Server's
#: choice too).
_UNCACHED: Final = {"cache-control": "private, no-cache, must-revalidate"}


def document_hash(document: str) -> str:
    """The hash that names `document`: the sha256 of its UTF-8 text, in lowercase hex."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()


class PersistedQueryError(Exception):
    """A request refused by the persisted-query rules: `status` over HTTP, an `error` message
    over WebSocket; `code` is its `extensions.code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers of its HTTP answer."""
        return _UNCACHED

    def graphql_error(self, request_id: str | None) -> GraphQLError:
        extensions: dict[str, object] = {"code": self.code}
        if request_id is not None:
            extensions["requestId"] = request_id
        return GraphQLError(self.message, extensions=extensions)


class DocumentStore(Protocol):
    """Where automatic persisted queries are kept: a map from hash to document, with expiry.
    Implementations keep only what `put` was given under the hash of it."""

    async def get(self, sha256_hash: str) -> str | None: ...

    async def put(self, sha256_hash: str, document: str) -> None: ...


def _invalid(expected: str, received: object) -> PersistedQueryError:
    return PersistedQueryError(
        400,
        PERSISTED_QUERY_INVALID,
        f"Expected extensions.persistedQuery{expected}, received {describe(received)}.",
    )


def requested_hash(extensions: Mapping[str, object] | None) -> str | None:
    """The hash `extensions.persistedQuery` names, in lowercase; None when there is none."""
    if not extensions:
        return None
    persisted = extensions.get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict):
        raise _invalid(" to be an object", persisted)
    version = persisted.get("version")
    if isinstance(version, bool) or version != VERSION:
        numeric = isinstance(version, int | float) and not isinstance(version, bool)
        shown = repr(version)[:20] if numeric else describe(version)
        raise PersistedQueryError(
            400,
            PERSISTED_QUERY_INVALID,
            f"Expected extensions.persistedQuery.version {VERSION}, received {shown}.",
        )
    sha256_hash = persisted.get("sha256Hash")
    if not isinstance(sha256_hash, str):
        raise _invalid(".sha256Hash to be a string", sha256_hash)
    # The length first: a megabyte of text is refused without being scanned.
    if len(sha256_hash) != 64 or not _SHA256_HEX.fullmatch(sha256_hash):
        raise PersistedQueryError(
            400,
            PERSISTED_QUERY_INVALID,
            "Expected extensions.persistedQuery.sha256Hash to be 64 hexadecimal digits (a "
            f"SHA-256), received a string of {len(sha256_hash)} characters that is not.",
        )
    return sha256_hash.lower()


@dataclass(frozen=True, slots=True)
class PersistedQueries:
    """The rules of the module docstring for one gateway.

    `store` gives the store of automatic persisted queries (it exists once the app has
    started), `apq` says whether they are on, `trusted` is the manifest (hash -> document) when
    only its documents may run. `parses` says whether a document parses within the token limit:
    only such documents are registered, and only within `registrations` (this process's
    limits). Each request's outcome is told to `observer` (`PERSISTED_OUTCOMES`); a refusal is
    counted as an operation too (`none`, `client_error`), as no operation will run to count it."""

    store: Callable[[], DocumentStore]
    parses: Callable[[str], Awaitable[bool]]
    apq: bool = True
    trusted: Mapping[str, str] | None = None
    max_document_bytes: int = 65_536
    registrations: RegistrationLimits | None = None
    observer: ApiObserver = NO_OBSERVER

    async def resolve(
        self, query: str | None, extensions: Mapping[str, object] | None
    ) -> str | None:
        """The document the request runs: its `query`, or the one its hash names. Raises
        `PersistedQueryError` for a request these rules refuse."""
        try:
            return await self._resolve(query, extensions)
        except PersistedQueryError as refused:
            missed = refused.code == PERSISTED_QUERY_NOT_FOUND
            self.observer.persisted_query("miss" if missed else "refused")
            self.observer.operation("none", "client_error", None)
            info = current_request()
            if info is not None:
                info.counted = True
            raise

    async def _resolve(
        self, query: str | None, extensions: Mapping[str, object] | None
    ) -> str | None:
        sha256_hash = requested_hash(extensions)
        if sha256_hash is not None and query == "":
            query = None  # `?query=&extensions=...`: no text, as some GET clients put it
        if sha256_hash is not None and query is not None and document_hash(query) != sha256_hash:
            raise PersistedQueryError(
                400,
                PERSISTED_QUERY_HASH_MISMATCH,
                "Expected extensions.persistedQuery.sha256Hash to be the SHA-256 of the query "
                "sent with it, received another hash.",
            )
        if self.trusted is not None:
            return self._trusted(self.trusted, query, sha256_hash)
        if sha256_hash is None:
            return query
        if not self.apq:
            raise PersistedQueryError(
                200, PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported"
            )
        if query is None:
            document = await self.store().get(sha256_hash)
            if document is None:
                raise PersistedQueryError(200, PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
            self.observer.persisted_query("hit")
            return document
        self.observer.persisted_query(await self._register(sha256_hash, query))
        # Registered or not, it runs (and a syntax error is answered as such).
        return query

    async def _register(self, sha256_hash: str, document: str) -> str:
        """Register `document` under its hash if it may be; the outcome."""
        size = self._size_within_limit(document)
        if size is None or not await self.parses(document):
            return "not_registered_invalid"
        refusal = None if self.registrations is None else self.registrations.admit(size)
        if refusal is not None:
            return f"not_registered_{refusal}_limited"
        await self.store().put(sha256_hash, document)
        return "registered"

    def _size_within_limit(self, document: str) -> int | None:
        """`document`'s UTF-8 size, or None when it is over `max_document_bytes`."""
        # Characters first: never more than bytes, and a huge text is not encoded.
        if len(document) > self.max_document_bytes:
            return None
        size = len(document.encode("utf-8", "surrogatepass"))
        return size if size <= self.max_document_bytes else None

    def _trusted(
        self, trusted: Mapping[str, str], query: str | None, sha256_hash: str | None
    ) -> str | None:
        if query is not None:
            if document_hash(query) in trusted:
                return query
            raise PersistedQueryError(
                403,
                PERSISTED_QUERY_REQUIRED,
                "Expected a document of this gateway's trusted documents (send its hash in "
                "extensions.persistedQuery), received one that is not.",
            )
        if sha256_hash is None:
            return None  # no query at all: the view's own error
        document = trusted.get(sha256_hash)
        if document is None:
            raise PersistedQueryError(
                404,
                PERSISTED_QUERY_NOT_IN_LIST,
                "Expected the hash of one of this gateway's trusted documents in "
                "extensions.persistedQuery.sha256Hash, received one it does not hold.",
            )
        self.observer.persisted_query("hit")
        return document
