"""API keys for server-to-server callers, from `GATEWAY_API_KEYS_FILE`.

The file holds each key's name, tenant, scopes and the SHA-256 of the key, never the key:

    {"keys": [{"name": "billing", "tenant": "acme", "scopes": ["jobs:read", "jobs:submit"],
               "sha256": "<64 hex digits>"}]}

A plain SHA-256 is right here (no password hash needed): keys are 256 random bits that
`new_key` makes, not words a person chose. A presented key is hashed and compared with every
entry's hash in constant time (`hmac.compare_digest`, every entry, no early exit), so the time
an answer takes says nothing about how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.callers.caller import Caller, Scope
from gateway.errors import Unauthenticated

#: Keys `new_key` makes start with this, so that a leaked one is easy to recognize (secret
#: scanners) and to tell from a bearer token.
KEY_PREFIX = "mpsgw_"
#: The longest key read; ours are 49 characters.
MAX_KEY_LENGTH = 256

_KNOWN_SCOPES = {scope.value: scope for scope in Scope}


class ApiKeysFileError(ValueError):
    """A keys file that cannot be used, said in one sentence without any hash."""


def new_key() -> str:
    """A new random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """What the keys file stores for `key`."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    caller: Caller


class ApiKeys:
    """The keys of one file, read when the gateway starts."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def from_file(cls, path: str) -> ApiKeys:
        try:
            document = json.loads(Path(path).read_bytes())
        except OSError as exc:
            raise ApiKeysFileError(
                f"Expected GATEWAY_API_KEYS_FILE to name a readable file ({exc.strerror})."
            ) from exc
        except ValueError as exc:
            raise ApiKeysFileError("Expected GATEWAY_API_KEYS_FILE to hold JSON.") from exc
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: object) -> ApiKeys:
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ApiKeysFileError(
                "Expected GATEWAY_API_KEYS_FILE to hold an object with a keys list."
            )
        entries: list[_Entry] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for index, entry in enumerate(keys):
            parsed = _entry(index, entry)
            if parsed.caller.name in names or parsed.digest in digests:
                raise ApiKeysFileError(
                    f"Expected every key of GATEWAY_API_KEYS_FILE once, with a name of its "
                    f"own: entry {index} repeats a name or a key."
                )
            names.add(parsed.caller.name)
            digests.add(parsed.digest)
            entries.append(parsed)
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def caller(self, key: str) -> Caller:
        """The caller of `key`, or Unauthenticated."""
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Unauthenticated("the API key is not one this gateway knows.")
        digest = hashlib.sha256(key.encode()).digest()
        found: Caller | None = None
        for entry in self._entries:
            # Every entry is compared, whatever matched: no early exit.
            if hmac.compare_digest(entry.digest, digest):
                found = entry.caller
        if found is None:
            raise Unauthenticated("the API key is not one this gateway knows.")
        return found


def _entry(index: int, entry: object) -> _Entry:
    def refuse(what: str) -> ApiKeysFileError:
        return ApiKeysFileError(f"Expected entry {index} of GATEWAY_API_KEYS_FILE {what}.")

    if not isinstance(entry, dict):
        raise refuse("to be an object")
    name, tenant, scopes, digest = (
        entry.get("name"),
        entry.get("tenant"),
        entry.get("scopes"),
        entry.get("sha256"),
    )
    if not isinstance(name, str) or not name:
        raise refuse("to have a name")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise refuse("to have a tenant that is a non-empty string, or null")
    if not isinstance(scopes, list) or not all(
        isinstance(scope, str) and scope in _KNOWN_SCOPES for scope in scopes
    ):
        raise refuse(f"to have scopes among {', '.join(_KNOWN_SCOPES)}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise refuse("to have a sha256 of 64 hex digits")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise refuse("to have a sha256 of 64 hex digits") from None
    caller = Caller(
        name=name,
        tenant=tenant,
        scopes=frozenset(_KNOWN_SCOPES[scope] for scope in scopes),
        method="api-key",
    )
    return _Entry(digest=raw, caller=caller)
