"""`gateway.answers.requests`: what keys an answer, read from POST bodies and GET query strings."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

import pytest

from gateway.answers.requests import AnswerKey, GraphQLRequest, read_get, read_post

QUERY = "query Q($id: ID!) { job(id: $id) { id } }"
QUERY_HASH = hashlib.sha256(QUERY.encode()).hexdigest()


def key_of(request: GraphQLRequest | None, visibility: str = "public") -> bytes:
    assert request is not None
    return AnswerKey.of(request, visibility=visibility, fingerprint="f").digest


def post(**payload: object) -> GraphQLRequest | None:
    return read_post(json.dumps(payload).encode())


def get(**params: object) -> GraphQLRequest | None:
    encoded = {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in params.items()
    }
    return read_get(urlencode(encoded).encode())


def test_post_and_get_of_the_same_request_have_the_same_key() -> None:
    variables = {"id": "a", "more": [1, {"b": 2, "a": 1}]}
    by_post = post(query=QUERY, operationName="Q", variables=variables)
    reordered = {"more": [1, {"a": 1, "b": 2}], "id": "a"}
    by_get = get(query=QUERY, operationName="Q", variables=reordered)
    assert by_post == by_get
    assert by_post is not None
    assert by_post.document_hash == QUERY_HASH


def test_every_part_of_the_request_changes_the_key() -> None:
    base = post(query=QUERY, operationName="Q", variables={"id": "a"})
    others = [
        post(query=QUERY + " ", operationName="Q", variables={"id": "a"}),
        post(query=QUERY, operationName=None, variables={"id": "a"}),
        post(query=QUERY, operationName="Q", variables={"id": "b"}),
        post(query=QUERY, operationName="Q", variables={"id": "a", "x": None}),
    ]
    keys = {key_of(base), *(key_of(other) for other in others)}
    assert len(keys) == 5
    assert key_of(base, "tenant:1") != key_of(base)


def test_a_persisted_query_hash_names_the_same_document_as_its_text() -> None:
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": QUERY_HASH}}
    by_hash = get(operationName="Q", variables={"id": "a"}, extensions=persisted)
    by_text = get(query=QUERY, operationName="Q", variables={"id": "a"})
    assert key_of(by_hash) == key_of(by_text)
    assert post(operationName="Q", variables={"id": "a"}, extensions=persisted) == by_text
    # Both: no key. Agreeing, they register the document, which the view must do (a kept
    # answer would leave the fleet's store without it); disagreeing, the view refuses them.
    assert post(query=QUERY, operationName="Q", variables={"id": "a"}, extensions=persisted) is None
    other = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    assert post(query=QUERY, extensions=other) is None
    # A gateway without persisted queries reads no key from a hash alone.
    hash_only = json.dumps({"extensions": persisted}).encode()
    assert read_post(hash_only) is not None
    assert read_post(hash_only, hashes=False) is None


def test_requests_that_cannot_be_read_have_no_key() -> None:
    assert read_post(b"not json") is None
    assert read_post(b"[1, 2]") is None  # a batch
    assert read_post(b"[" * 100_000) is None  # nested past any limit
    assert post(query=3) is None
    assert post(query=QUERY, variables=[1]) is None
    assert post(query=QUERY, operationName=7) is None
    assert post(variables={}) is None  # no document at all
    assert post(extensions={"persistedQuery": {"sha256Hash": "not hex" * 9 + "1"}}) is None
    assert read_get(b"query=q&variables=%7Bnot") is None
    assert read_get(b"query=%ff") is None  # not UTF-8


@pytest.mark.parametrize(
    "extensions",
    [
        "a string",
        7,
        True,
        [],
        {"persistedQuery": "not an object"},
        {"persistedQuery": {"version": 2, "sha256Hash": QUERY_HASH}},
        {"persistedQuery": {"version": True, "sha256Hash": QUERY_HASH}},
        {"persistedQuery": {"version": 1, "sha256Hash": "0x" + QUERY_HASH[2:]}},
        {"persistedQuery": {"version": 1, "sha256Hash": "_" * 64}},
    ],
)
def test_extensions_the_view_refuses_have_no_key(extensions: object) -> None:
    # A kept answer must never stand in for the view's refusal (graphql-http's audit asks 400).
    assert post(query=QUERY, extensions=extensions) is None
    assert get(query=QUERY, extensions=extensions) is None
