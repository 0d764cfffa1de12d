"""Presigned GET URLs for OSS objects (OSS signature V4), computed locally.

OSS buckets are private by default, so a result file's plain https URL does not open in a browser.
A presigned URL does, until it expires: it carries the gateway's AccessKey id (and, with temporary
credentials, the STS token, as OSS requires) plus an HMAC signature, never the secret. Signing is a
pure computation: no call to OSS, no upstream budget, no I/O.

The algorithm (docs/upstream.md section 6.3, and the official SDKs' `SignerV4`), for a GET
with no signed headers:

    CanonicalQuery   = the x-oss-* query parameters but x-oss-signature, names and values
                       URI-encoded, sorted by name, joined with "&"
    CanonicalRequest = these lines, joined with LF: "GET", URI-encode("/<bucket>/<key>", "/"
                       kept), CanonicalQuery, "" (no signed headers), "" (no additional
                       headers), "UNSIGNED-PAYLOAD"
    Scope            = <YYYYMMDD>/<region>/oss/aliyun_v4_request
    StringToSign     = these lines, joined with LF: "OSS4-HMAC-SHA256", x-oss-date, Scope,
                       hex(SHA256(CanonicalRequest))
    SigningKey       = HMAC-SHA256 chain from "aliyun_v4" + secret over the date, the region,
                       "oss" and "aliyun_v4_request"
    x-oss-signature  = hex(HMAC-SHA256(SigningKey, StringToSign))

Why these lines rather than `alibabacloud-oss-v2`'s `Client.presign` (the official SDK the tests
check this module against, byte for byte): that SDK brings requests, pycryptodome and crcmod-plus
(a whole HTTP client) for an HMAC chain; its client is configured for one region and endpoint
while each of our objects names its own; its `presign` reads the wall clock twice, so
`expires=3600` may come out as `x-oss-expires=3599`, and takes no clock a test could set; and it
ships no type information.

An object whose region is unknown (a transfer-acceleration endpoint: the URL names none) is not
signed: V4 signs the bucket's region into the scope, and a guessed region yields a link OSS refuses,
which is worse than none. The legacy V1 scheme (HMAC-SHA1, no region) would work there, but OSS
recommends V4 over it, and one scheme means one thing to check and to support.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable

from gateway.credentials import Credentials
from gateway.model import OssObject
from gateway.rfc3986 import percent_encode

#: Bounds of `x-oss-expires` that OSS accepts for a V4 URL: one second to seven days.
MIN_EXPIRES_SECONDS = 1
MAX_EXPIRES_SECONDS = 7 * 24 * 3600

ALGORITHM = "OSS4-HMAC-SHA256"
_PRODUCT = "oss"
_TERMINATOR = "aliyun_v4_request"


class OssPresigner:
    """Signs GET URLs for OSS objects with one set of credentials.

    Safe to share between requests and tasks: it holds no mutable state, and `clock` (Unix seconds,
    `time.time` by default) is read once per URL.
    """

    def __init__(self, credentials: Credentials, *, clock: Callable[[], float] = time.time) -> None:
        self._credentials = credentials
        self._clock = clock

    @property
    def access_key_id(self) -> str:
        """The AccessKey id every URL names (public: OSS needs it to find the key)."""
        return self._credentials.access_key_id

    def presign_get(self, obj: OssObject, expires_in: int) -> str | None:
        """A V4 presigned URL that GETs `obj` for `expires_in` seconds from now.

        Guarantees: the URL is `obj.https_url` (virtual-host style on the object's own endpoint,
        key percent-encoded with `/` kept) plus the query `x-oss-signature-version`, `x-oss-date`
        (the clock, whole seconds, UTC), `x-oss-expires` (exactly `expires_in`),
        `x-oss-credential`, `x-oss-security-token` (only with an STS token) and `x-oss-signature`.
        Whether OSS serves it depends on the key's permissions (oss:GetObject on the object).

        Returns None when the object cannot be signed: its region is unknown, or its key is not
        valid Unicode text (OSS keys are UTF-8). Raises ValueError when `expires_in` is outside
        [MIN_EXPIRES_SECONDS, MAX_EXPIRES_SECONDS]: callers validate their clients' input first.
        """
        if not MIN_EXPIRES_SECONDS <= expires_in <= MAX_EXPIRES_SECONDS:
            raise ValueError(
                f"Expected expires_in from {MIN_EXPIRES_SECONDS} to {MAX_EXPIRES_SECONDS} "
                f"seconds, received {expires_in}."
            )
        region = obj.region
        if region is None or not _is_utf8(obj.key):
            return None
        timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(math.floor(self._clock())))
        date = timestamp[:8]
        scope = f"{date}/{region}/{_PRODUCT}/{_TERMINATOR}"
        credentials = self._credentials
        params = {
            "x-oss-signature-version": ALGORITHM,
            "x-oss-date": timestamp,
            "x-oss-expires": str(expires_in),
            "x-oss-credential": f"{credentials.access_key_id}/{scope}",
        }
        # An empty token is no token, as in the official SDKs.
        if credentials.security_token:
            params["x-oss-security-token"] = credentials.security_token
        encoded = [(percent_encode(name), percent_encode(value)) for name, value in params.items()]
        canonical_request = "\n".join(
            (
                "GET",
                percent_encode(f"/{obj.bucket}/{obj.key}", safe="/"),
                "&".join(f"{name}={value}" for name, value in sorted(encoded)),
                "",  # canonical headers: a browser's GET sends none that are signed
                "",  # additional headers: none
                "UNSIGNED-PAYLOAD",
            )
        )
        string_to_sign = "\n".join(
            (ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        key = ("aliyun_v4" + credentials.access_key_secret).encode()
        for part in (date, region, _PRODUCT, _TERMINATOR):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        query = "&".join(f"{name}={value}" for name, value in encoded)
        return f"{obj.https_url}?{query}&x-oss-signature={signature}"


def _is_utf8(text: str) -> bool:
    # A JSON body may hold lone surrogates (`"\ud800"`), which no OSS key can contain.
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
