"""The trusted-documents manifest (GATEWAY_TRUSTED_DOCUMENTS): the only documents a gateway
in that mode runs, by their sha256.

Two formats, told apart by their shape:

- Apollo's persisted-query manifest (what `@apollo/generate-persisted-query-manifest` writes):
  `{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id": <sha256>,
  "body": <document>, "name": ..., "type": ...}, ...]}`;
- a plain map `{<sha256>: <document>, ...}` (GraphQL Code Generator's `persisted-documents.json`
  with `hashAlgorithm: "sha256"`, Relay's persisted queries, hand-written lists).

Every id must be the SHA-256 of its document (64 hex digits, as Apollo Client's persisted query
link computes it by default): a manifest with another id, a document that is not a string, or
a file that is not JSON is refused when the gateway starts, with a `ManifestError` that says
which entry and why, never half loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["APOLLO_FORMAT", "ManifestError", "load_manifest", "read_manifest"]

#: The `format` of Apollo's persisted-query manifest.
APOLLO_FORMAT: Final = "apollo-persisted-query-manifest"

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ManifestError(ValueError):
    """A trusted-documents manifest the gateway will not start with."""


def load_manifest(path: Path) -> dict[str, str]:
    """The documents of the manifest at `path`, by their lowercase sha256."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"Expected GATEWAY_TRUSTED_DOCUMENTS to name a readable UTF-8 file, received "
            f"{str(path)!r}: {exc}."
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(
            f"Expected the trusted-documents manifest {str(path)!r} to be JSON: {exc}."
        ) from None
    return read_manifest(data, source=str(path))


def read_manifest(data: object, *, source: str = "the manifest") -> dict[str, str]:
    """The documents of a decoded manifest, by their lowercase sha256."""
    documents: dict[str, str] = {}
    for where, key, document in _entries(data, source):
        if not isinstance(key, str) or not _SHA256_HEX.fullmatch(key):
            raise ManifestError(
                f"Expected every id of {source} to be a SHA-256 in hex (64 digits), received "
                f"{_shown(key)} at {where}."
            )
        if not isinstance(document, str) or not document.strip():
            raise ManifestError(f"Expected a document (a non-empty string) at {where} of {source}.")
        actual = hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()
        if actual != key.lower():
            raise ManifestError(
                f"Expected the id at {where} of {source} to be the SHA-256 of its document "
                f"({actual}), received {key}."
            )
        documents[actual] = document
    return documents


def _entries(data: object, source: str) -> Iterator[tuple[str, object, object]]:
    """(where, id, document) of each entry of either format."""
    if isinstance(data, dict) and data.get("format") == APOLLO_FORMAT:
        version = data.get("version", 1)
        if version != 1:
            raise ManifestError(
                f"Expected {source} to be version 1 of {APOLLO_FORMAT}, received version "
                f"{_shown(version)}."
            )
        operations = data.get("operations")
        if not isinstance(operations, list):
            raise ManifestError(f"Expected the operations of {source} to be a list.")
        for index, operation in enumerate(operations):
            where = f"operations[{index}]"
            if not isinstance(operation, dict):
                raise ManifestError(f"Expected {where} of {source} to be an object.")
            yield where, operation.get("id"), operation.get("body")
        return
    if isinstance(data, dict) and "format" not in data:
        for key, document in data.items():
            yield f"key {_shown(key)}", key, document
        return
    raise ManifestError(
        f"Expected {source} to be Apollo's persisted-query manifest (format {APOLLO_FORMAT!r}) "
        "or a JSON object mapping each document's SHA-256 to the document."
    )


def _shown(value: object) -> str:
    return repr(value)[:80]
