"""Trusted-documents manifests: both formats read to the same map, ids checked against their
documents."""

from __future__ import annotations

import hashlib

import pytest

from gateway.persisted import ManifestError
from gateway.persisted.manifest import read_manifest

QUERY = "query Job($id: ID!) { job(id: $id) { id } }"
SUBSCRIPTION = 'subscription { jobUpdates(id: "x") { id } }'


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def test_apollos_manifest_and_a_plain_map_read_alike() -> None:
    apollo = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256(QUERY), "body": QUERY, "name": "Job", "type": "query"},
            {"id": sha256(SUBSCRIPTION).upper(), "body": SUBSCRIPTION, "type": "subscription"},
        ],
    }
    plain = {sha256(QUERY): QUERY, sha256(SUBSCRIPTION): SUBSCRIPTION}
    expected = {sha256(QUERY): QUERY, sha256(SUBSCRIPTION): SUBSCRIPTION}
    assert read_manifest(apollo) == read_manifest(plain) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "relay"}, "Expected the manifest to be Apollo's persisted-query manifest"),
        (
            {"format": "apollo-persisted-query-manifest", "operations": ["x"]},
            "Expected operations[0] of the manifest to be an object.",
        ),
        (
            {"a" * 40: QUERY},
            "Expected every id of the manifest to be a SHA-256 in hex (64 digits), received "
            f"'{'a' * 40}' at key '{'a' * 40}'.",
        ),
        ({sha256(QUERY): " "}, "Expected a document (a non-empty string) at key"),
        (
            {sha256(SUBSCRIPTION): QUERY},
            f"Expected the id at key '{sha256(SUBSCRIPTION)}' of the manifest to be the SHA-256 "
            f"of its document ({sha256(QUERY)}), received {sha256(SUBSCRIPTION)}.",
        ),
    ],
)
def test_a_bad_manifest_says_which_entry_and_why(data: object, message: str) -> None:
    with pytest.raises(ManifestError) as refused:
        read_manifest(data)
    assert str(refused.value).startswith(message)
