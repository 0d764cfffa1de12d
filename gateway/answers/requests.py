"""What identifies a GraphQL request's answer, read from the HTTP request without parsing the
GraphQL document: `AnswerKey.of(...)`.

An answer is determined by the document, the operation name, the variables, who asks (their
`visibility`) and the gateway that answers (its `fingerprint`: the schema and the settings that
shape answers). The key is a digest of exactly these, so it is a few bytes however large the
request, and a request answered differently (another schema after a deploy) never shares it.

The document is named by the SHA-256 of its text, hex: what Apollo's automatic persisted
queries send as `extensions.persistedQuery.sha256Hash`, so a request that sends only the hash
(GET or POST) has the same key as one that sends the text.

A request this module cannot read (not JSON, a batch, a GraphQL multipart upload...) has no key:
it goes the normal way, which answers its error, and nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.api.persisted import PersistedQueryError, document_hash, requested_hash

__all__ = ["AnswerKey", "read_get", "read_post"]


@dataclass(frozen=True, slots=True)
class GraphQLRequest:
    """The parts of a request its answer depends on."""

    #: SHA-256 of the document's text, hex (or the persisted query's hash when no text came).
    document_hash: str
    operation_name: str | None
    #: The variables as canonical JSON (sorted keys, no spaces): equal values, equal text.
    variables: str


def read_post(body: bytes, *, hashes: bool = True) -> GraphQLRequest | None:
    """The request in a JSON body (`{"query", "operationName", "variables", "extensions"}`).
    `hashes` False: a request naming its document by hash alone has no key (the gateway runs
    no persisted queries, and must say so)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    return _read(
        payload.get("query"),
        payload.get("operationName"),
        payload.get("variables"),
        payload.get("extensions"),
        hashes,
    )


def read_get(query_string: bytes, *, hashes: bool = True) -> GraphQLRequest | None:
    """The request in a GET query string (`variables` and `extensions` as JSON text);
    `hashes` as `read_post` says."""
    try:
        params = dict(
            parse_qsl(
                query_string.decode("latin-1"),
                keep_blank_values=True,
                strict_parsing=False,
                errors="strict",
            )
        )
        variables = json.loads(params["variables"]) if params.get("variables") else None
        extensions = json.loads(params["extensions"]) if params.get("extensions") else None
    except (ValueError, RecursionError):
        return None
    return _read(params.get("query"), params.get("operationName"), variables, extensions, hashes)


def _read(
    query: object, operation_name: object, variables: object, extensions: object, hashes: bool
) -> GraphQLRequest | None:
    if operation_name is not None and not isinstance(operation_name, str):
        return None
    if variables is not None and not isinstance(variables, dict):
        return None
    # Extensions the view refuses (not an object, a malformed persistedQuery) have no key:
    # the refusal is the view's to give, never a kept answer's. The same reading as the view's.
    if extensions is not None and not isinstance(extensions, dict):
        return None
    try:
        persisted = requested_hash(extensions)
    except PersistedQueryError:
        return None
    if isinstance(query, str):
        text_hash = document_hash(query)
        if persisted is not None:
            # Text with its hash registers the document (Apollo's client sends it after a
            # PERSISTED_QUERY_NOT_FOUND): the view must see it, or the fleet's store never
            # learns the hash; a hash that is not the text's is the view's to refuse.
            return None
    elif query is None and persisted is not None and hashes:
        text_hash = persisted
    else:
        return None
    try:
        canonical = json.dumps(variables or {}, sort_keys=True, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return None
    return GraphQLRequest(text_hash, operation_name or None, canonical)


@dataclass(frozen=True, slots=True)
class AnswerKey:
    """The digest an answer is kept under (32 bytes), and its hex form for shared stores."""

    digest: bytes

    @classmethod
    def of(cls, request: GraphQLRequest, *, visibility: str, fingerprint: str) -> AnswerKey:
        hasher = hashlib.sha256()
        for part in (
            fingerprint,
            visibility,
            request.document_hash,
            request.operation_name or "",
            request.variables,
        ):
            encoded = part.encode("utf-8", "surrogatepass")
            # Length-prefixed: no two different tuples of parts hash the same text.
            hasher.update(len(encoded).to_bytes(8, "big"))
            hasher.update(encoded)
        return cls(hasher.digest())

    @property
    def hex(self) -> str:
        return self.digest.hex()
