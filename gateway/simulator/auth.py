"""Who is calling: signature V1 (RPC, HMAC-SHA1) and V3 (ACS3-HMAC-SHA256) verification.

Both schemes end in the same checks, in this order: every piece present, timestamp well formed and
within 15 minutes of the simulator clock, access key known, signature right, nonce not seen in the
last 15 minutes. A nonce is only remembered once the rest of the request checked out, so a
rejected request does not burn its nonce.

V1 reuses the gateway's own signer functions (`gateway.mps.signing`), so the two cannot drift
apart; the tests prove both against the official SDK. V3 is computed as the official
`alibabacloud_openapi_util.client.Client.get_authorization` computes it (values RFC 3986 encoded,
names not; canonical headers lower-cased, trimmed, several values sorted and joined with `,`), over
the headers the caller lists in SignedHeaders, with the payload hash taken from the body received.

A SecurityToken (V1 parameter, V3 `x-acs-security-token` header) is accepted whatever its value:
the simulator has no STS. It must be signed, as the cloud requires.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from starlette.datastructures import Headers

from gateway.mps.signing import sign, string_to_sign
from gateway.simulator import errors

#: Largest distance between a request's timestamp and the server clock, and how long a nonce is
#: remembered (docs/upstream.md sections 3.1 and 4.2).
MAX_SKEW_SECONDS = 15 * 60.0

V1_REQUIRED = (
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)
V3_ALGORITHM = "ACS3-HMAC-SHA256"
#: Headers a V3 request must send and sign (the doc asks for host and every x-acs-* header).
V3_SIGNED_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller."""

    access_key_id: str
    signature_version: Literal["v1", "v3"]
    security_token: str | None = None


class NonceRegistry:
    """Nonces seen in the last 15 minutes, per access key.

    Memory is bounded by the calls of one 15-minute span: entries older than that are dropped on
    every use, oldest first.
    """

    def __init__(self, ttl: float = MAX_SKEW_SECONDS) -> None:
        self._ttl = ttl
        self._seen: dict[tuple[str, str], float] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, access_key_id: str, nonce: str, now: float) -> bool:
        """Remember the nonce; False if it was already used within the last 15 minutes."""
        self._prune(now)
        key = (access_key_id, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        self._order.append((now, key))
        return True

    def _prune(self, now: float) -> None:
        horizon = now - self._ttl
        while self._order and self._order[0][0] <= horizon:
            seen_at, key = self._order.popleft()
            if self._seen.get(key) == seen_at:
                del self._seen[key]


def parse_timestamp(text: str) -> float:
    """Unix seconds of a `YYYY-MM-DDThh:mm:ssZ` timestamp (fractional seconds allowed)."""
    for fmt in _TIMESTAMP_FORMATS:
        try:
            parsed = time.strptime(text, fmt)
        except ValueError:
            continue
        return float(calendar.timegm(parsed))
    raise errors.timestamp_format()


def check_fresh(timestamp: str, now: float) -> None:
    if abs(parse_timestamp(timestamp) - now) > MAX_SKEW_SECONDS:
        raise errors.timestamp_expired()


class Authenticator:
    """Verifies requests against a table of access keys (id -> secret)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)
        self.nonces = NonceRegistry()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(access_key_ids={sorted(self._secrets)!r})"

    def _secret(self, access_key_id: str) -> str:
        try:
            return self._secrets[access_key_id]
        except KeyError:
            raise errors.access_key_not_found() from None

    def _use_nonce(self, access_key_id: str, nonce: str, now: float) -> None:
        if not self.nonces.use(access_key_id, nonce, now):
            raise errors.nonce_used()

    def verify_v1(self, method: str, params: Mapping[str, str], now: float) -> Caller:
        """Check a V1-signed request whose query and form parameters are `params`."""
        for name in V1_REQUIRED:
            if not params.get(name):
                raise errors.missing_parameter(name)
        if params["SignatureMethod"].upper() != "HMAC-SHA1":
            raise errors.invalid_signature_method()
        if params["SignatureVersion"] != "1.0":
            raise errors.incomplete_signature(
                f"SignatureVersion must be 1.0, not {params['SignatureVersion'][:20]!r}."
            )
        check_fresh(params["Timestamp"], now)
        access_key_id = params["AccessKeyId"]
        secret = self._secret(access_key_id)
        unsigned = {name: value for name, value in params.items() if name != "Signature"}
        expected = sign(method, unsigned, secret)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise errors.signature_does_not_match(string_to_sign(method, unsigned))
        self._use_nonce(access_key_id, params["SignatureNonce"], now)
        return Caller(access_key_id, "v1", params.get("SecurityToken") or None)

    def verify_v3(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Headers,
        body: bytes,
        now: float,
    ) -> Caller:
        """Check a V3-signed request (its `Authorization` header starts with `ACS3-`)."""
        algorithm, _, rest = headers.get("authorization", "").strip().partition(" ")
        if algorithm != V3_ALGORITHM:
            raise errors.invalid_signature_method()
        parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
        credential = parts.get("Credential", "")
        signed_list = parts.get("SignedHeaders", "")
        signature = parts.get("Signature", "")
        if not (credential and signed_list and signature):
            raise errors.incomplete_signature(
                "The Authorization header needs Credential, SignedHeaders and Signature."
            )
        signed = [name.strip().lower() for name in signed_list.split(";")]
        required = list(V3_SIGNED_HEADERS)
        if "x-acs-security-token" in headers:
            required.append("x-acs-security-token")
        for name in required:
            if name not in headers:
                raise errors.incomplete_signature(f"The {name} header is required.")
            if name not in signed:
                raise errors.incomplete_signature(f"SignedHeaders must include {name}.")
        check_fresh(headers["x-acs-date"], now)
        secret = self._secret(credential)
        payload_hash = hashlib.sha256(body).hexdigest()
        if headers["x-acs-content-sha256"].strip().lower() != payload_hash:
            raise errors.content_hash_does_not_match()
        sts = v3_string_to_sign(method, path, query, headers, signed, payload_hash)
        expected = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise errors.signature_does_not_match(sts)
        self._use_nonce(credential, headers["x-acs-signature-nonce"], now)
        return Caller(credential, "v3", headers.get("x-acs-security-token") or None)


def v3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Headers,
    signed: list[str],
    payload_hash: str,
) -> str:
    canonical_query = "&".join(
        f"{name}={quote(value, safe='~')}" for name, value in sorted(query.items())
    )
    canonical_headers = "".join(
        f"{name}:{','.join(sorted(value.strip() for value in headers.getlist(name)))}\n"
        for name in signed
    )
    return (
        "\n".join(
            (method.upper(), path or "/", canonical_query, canonical_headers, ";".join(signed))
        )
        + f"\n{payload_hash}"
    )


def v3_string_to_sign(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Headers,
    signed: list[str],
    payload_hash: str,
) -> str:
    canonical = v3_canonical_request(method, path, query, headers, signed, payload_hash)
    return f"{V3_ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
