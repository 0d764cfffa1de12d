"""The JSON Web Key Set that signs callers' tokens: read from a file once, or fetched from a URL
(an OIDC provider's `jwks_uri`) and kept.

Only asymmetric signing keys are kept (RSA, EC, OKP with the algorithms in `ALGORITHMS`): a
symmetric (`oct`) key in the set is ignored, so no token can be checked with a shared secret.
A URL's set is fetched again when it is older than `max_age`, and when a token names a key id
the set does not hold (a provider rotating keys), but at most once per `min_refresh` seconds
however many such tokens arrive: unknown key ids cannot make the gateway hammer the provider.
When a fetch fails, the keys already held keep serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger(__name__)

#: The signing algorithms a key may declare (or imply by its type and curve): asymmetric only.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

#: The largest key set document read (a provider's holds a few keys: a few kilobytes).
MAX_JWKS_BYTES = 256 * 1024


class KeySource(Protocol):
    """Where a token's key is looked up by its `kid`."""

    async def key(self, kid: str | None) -> PyJWK | None:
        """The signing key named `kid` (None: the set's only key, if it has one key)."""
        ...

    async def aclose(self) -> None: ...


class KeySetError(ValueError):
    """A key set document that is not one (said in one sentence, without its content)."""


def parse_key_set(document: bytes | str) -> dict[str | None, PyJWK]:
    """The usable signing keys of a JWKS document by `kid` (a key without one under None).
    Keys that are not asymmetric signing keys of `ALGORITHMS`, or that cannot be read, are
    left out; a document with none is a KeySetError."""
    try:
        value = json.loads(document)
    except ValueError as exc:
        raise KeySetError("Expected a JSON Web Key Set, received text that is not JSON.") from exc
    keys = value.get("keys") if isinstance(value, dict) else None
    if not isinstance(keys, list):
        raise KeySetError("Expected a JSON Web Key Set (an object with a keys list).")
    usable: dict[str | None, PyJWK] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(entry)
        except (PyJWTError, ValueError, TypeError):
            # The message holds the key: never shown.
            continue
        if key.algorithm_name not in ALGORITHMS:
            continue
        kid = entry.get("kid")
        usable[kid if isinstance(kid, str) else None] = key
    if not usable:
        raise KeySetError(
            "Expected a JSON Web Key Set with at least one asymmetric signing key "
            f"({', '.join(sorted(ALGORITHMS))}), received none."
        )
    return usable


def _pick(keys: Mapping[str | None, PyJWK], kid: str | None) -> PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    # A token without `kid` is accepted only when the set leaves no choice.
    return next(iter(keys.values())) if len(keys) == 1 else None


class FileKeySource:
    """A key set read from a file when the gateway starts."""

    def __init__(self, path: str) -> None:
        try:
            document = Path(path).read_bytes()
        except OSError as exc:
            raise KeySetError(
                f"Expected GATEWAY_JWT_JWKS_FILE to name a readable file ({exc.strerror})."
            ) from exc
        self._keys = parse_key_set(document)

    async def key(self, kid: str | None) -> PyJWK | None:
        return _pick(self._keys, kid)

    async def aclose(self) -> None:
        return None


class UrlKeySource:
    """A key set fetched from a URL, kept `max_age` seconds, fetched again for an unknown key
    id at most once per `min_refresh` seconds. Concurrent lookups share one fetch."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float,
        min_refresh: float,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout, transport=transport, follow_redirects=False
        )
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._loaded_at: float | None = None  # the last success
        self._fetching: asyncio.Future[None] | None = None
        #: Fetches made (successful or not): what the tests count.
        self.fetches = 0

    async def key(self, kid: str | None) -> PyJWK | None:
        now = self._clock()
        stale = self._loaded_at is None or now - self._loaded_at >= self._max_age
        key = _pick(self._keys, kid)
        may_fetch = self._fetched_at is None or now - self._fetched_at >= self._min_refresh
        if (stale or key is None) and may_fetch:
            await self._refresh()
            key = _pick(self._keys, kid)
        return key

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        # Shielded: a caller that goes away does not cancel the fetch the others wait for.
        await asyncio.shield(self._fetching)

    def _fetched(self, future: asyncio.Future[None]) -> None:
        self._fetching = None
        if not future.cancelled():
            future.exception()  # _fetch logs its own failures; retrieve to silence asyncio

    async def _fetch(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            response = await self._client.get(self._url, headers={"accept": "application/json"})
            if response.status_code != 200:
                raise KeySetError(f"Expected HTTP 200, received {response.status_code}.")
            if len(response.content) > MAX_JWKS_BYTES:
                raise KeySetError(f"Expected at most {MAX_JWKS_BYTES} bytes, received more.")
            keys = parse_key_set(response.content)
        except (httpx.HTTPError, KeySetError) as exc:
            # The URL is configuration, not a secret; the answer's body is never logged.
            logger.warning(
                "Could not fetch the JSON Web Key Set from %s: %s; %d keys held still serve",
                self._url,
                exc if isinstance(exc, KeySetError) else type(exc).__name__,
                len(self._keys),
            )
            return
        self._keys = keys
        self._loaded_at = self._clock()

    async def aclose(self) -> None:
        await self._client.aclose()
