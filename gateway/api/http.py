"""GraphQL over HTTP as the gateway answers it: which media type, which status, which refusal.

The rules are the GraphQL-over-HTTP specification's, as graphql-http's audit checks them:

- A client that accepts `application/graphql-response+json` (and prefers it, or names it as
  much as `application/json`) gets it. A request that fails before execution (a document that
  does not parse or validate, variables that do not coerce, an operation too costly) is then
  answered 400, without `data`.
- Any other client (`application/json`, `*/*`, no `Accept` at all) gets `application/json` and
  the legacy rules: 200 for every well-formed request, `"data": null` included.
- Whatever the client accepts, a request that picks no operation (several and no
  `operationName`, or an unknown one) is answered 400 without `data`, and what the transport
  cannot serve is refused with a coded error (`HttpRefusal`): a mutation over GET (405, with
  `Allow: POST`), a subscription over plain HTTP (400: it needs WebSocket or SSE), a body that
  is not `application/json` (415).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from strawberry.types.graphql import OperationType

from gateway.errors import OperationNameRequired, QueryTooComplex, UnknownOperationName
from gateway.http_errors import (
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    SUBSCRIPTION_TRANSPORT_REQUIRED,
    UNSUPPORTED_MEDIA_TYPE,
    HttpRefusal,
)

#: The media type of the GraphQL-over-HTTP specification.
GRAPHQL_RESPONSE_JSON: Final = "application/graphql-response+json"
#: The legacy one, every client's default.
JSON: Final = "application/json"

#: The operations plain HTTP serves, by method (a subscription needs a transport that streams).
PLAIN_HTTP_OPERATIONS: Final[Mapping[str, frozenset[OperationType]]] = {
    "GET": frozenset({OperationType.QUERY}),
    "POST": frozenset({OperationType.QUERY, OperationType.MUTATION}),
}

#: Codes of errors raised before execution: GraphQL's own, and the gateway's refusals of a
#: document as a whole.
PRE_EXECUTION_CODES: Final = frozenset(
    {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
        BAD_REQUEST,
        QueryTooComplex.code,
        OperationNameRequired.code,
        UnknownOperationName.code,
    }
)
#: Of those, the ones answered 400 whatever the client accepts: no operation was picked.
ALWAYS_REFUSED_CODES: Final = frozenset({OperationNameRequired.code, UnknownOperationName.code})


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """`(type/subtype, q)` of each media range of an Accept header; unreadable q counts as 0."""
    ranges = []
    for item in accept.split(","):
        media, *parameters = item.split(";")
        media = media.strip().lower()
        if not media:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    quality = 0.0
        ranges.append((media, quality))
    return ranges


def _quality(ranges: list[tuple[str, float]], media_type: str) -> tuple[float, bool]:
    """How much `ranges` want `media_type`, and whether they name it (not a wildcard): the most
    specific matching range decides (RFC 9110, 12.5.1)."""
    kind = media_type.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for media, quality in ranges:
        specificity = (
            2 if media == media_type else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
        )
        if specificity > best[0]:
            best = (specificity, quality)
    return best[1], best[0] == 2


def response_media_type(accept: str | None) -> str:
    """The media type of the answer to a request with this Accept header.

    `application/graphql-response+json` when the client names it with a quality at least that
    of `application/json` (a wildcard does not count: `*/*` means the legacy type); otherwise
    `application/json`, also when the client accepts neither (a 406 would fail clients that
    send a stray Accept, and JSON is what every client reads)."""
    if not accept:
        return JSON
    ranges = _media_ranges(accept)
    new_quality, named = _quality(ranges, GRAPHQL_RESPONSE_JSON)
    if named and new_quality > 0 and new_quality >= _quality(ranges, JSON)[0]:
        return GRAPHQL_RESPONSE_JSON
    return JSON


def accepts_json(accept: str | None) -> bool:
    """Whether a JSON answer (either media type) is acceptable under this Accept header; a
    client that sends none accepts anything."""
    if not accept:
        return True
    ranges = _media_ranges(accept)
    return _quality(ranges, JSON)[0] > 0 or _quality(ranges, GRAPHQL_RESPONSE_JSON)[0] > 0


def answer(response_data: Mapping[str, Any], media_type: str) -> tuple[int, Mapping[str, Any]]:
    """The status and body of the answer to a GraphQL result (`{"data": ..., "errors": ...}`)."""
    errors = response_data.get("errors")
    if not errors or response_data.get("data") is not None:
        return 200, response_data
    codes = {(error.get("extensions") or {}).get("code") for error in errors}
    if not codes <= PRE_EXECUTION_CODES:
        return 200, response_data
    if media_type == GRAPHQL_RESPONSE_JSON or codes & ALWAYS_REFUSED_CODES:
        # Nothing ran: no `data` entry at all (the GraphQL spec's rule for request errors).
        return 400, {key: value for key, value in response_data.items() if key != "data"}
    return 200, response_data


def method_refusal(method: str) -> HttpRefusal:
    """The refusal of a method /graphql does not serve."""
    return HttpRefusal(
        405,
        f"Expected GET or POST, received {method[:20]}.",
        METHOD_NOT_ALLOWED,
        headers={"allow": "GET, POST"},
    )


def operation_type_refusal(operation_type: OperationType, method: str) -> HttpRefusal:
    """The refusal of an operation plain HTTP does not serve by `method`."""
    if operation_type is OperationType.SUBSCRIPTION:
        return HttpRefusal(
            400,
            "Expected a subscription over WebSocket (graphql-transport-ws at this URL) or "
            "Server-Sent Events (graphql-sse: this request with Accept: text/event-stream), "
            f"received one over plain HTTP {method}, which can answer only one result.",
            SUBSCRIPTION_TRANSPORT_REQUIRED,
        )
    if operation_type is OperationType.MUTATION and method == "GET":
        return HttpRefusal(
            405,
            "Expected a mutation over POST, received one over GET (GET must not change anything).",
            METHOD_NOT_ALLOWED,
            headers={"allow": "POST"},
        )
    return HttpRefusal(
        405,
        f"Expected a query over GET or POST, received a {operation_type.value} over {method}.",
        METHOD_NOT_ALLOWED,
        headers={"allow": "GET, POST"},
    )


def body_type_refusal(content_type: str | None) -> HttpRefusal | None:
    """The refusal of a POST body of `content_type` (the header's value), or None when the
    gateway reads it: `application/json`, in UTF-8 (the only charset JSON has, RFC 8259)."""
    if content_type is None or not content_type.strip():
        received = "no Content-Type"
    else:
        media, *parameters = content_type.split(";")
        media = media.strip().lower()
        charset = next(
            (
                value.strip().strip('"').lower()
                for name, _, value in (parameter.partition("=") for parameter in parameters)
                if name.strip().lower() == "charset"
            ),
            "utf-8",
        )
        if media == JSON and charset in ("utf-8", "utf8"):
            return None
        received = (
            f"Content-Type {media[:80]}"
            if media != JSON
            else f"Content-Type {media} in charset {charset[:40]}"
        )
    return HttpRefusal(
        415,
        f"Expected a body of Content-Type {JSON} (UTF-8), received {received}.",
        UNSUPPORTED_MEDIA_TYPE,
        headers={"accept-post": JSON},
    )


BATCH_REFUSAL: Final = (
    "Expected one GraphQL request (a JSON object), received a batch (a JSON array): the "
    "gateway answers one operation per request; send each on its own, or list the jobs of "
    "several in one jobs(ids:)."
)
