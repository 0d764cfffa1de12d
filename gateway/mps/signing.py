"""Alibaba Cloud RPC signature V1 (HMAC-SHA1), as an `httpx.Auth`.

The algorithm (docs/upstream.md section 3.2): every parameter but `Signature`, from the query
string and from a form body alike, sorted by name, each name and value percent-encoded per RFC 3986
(`%20` for a space, `%2A` for `*`, `~` kept), joined with `&`; then
`StringToSign = METHOD & %2F & percent_encode(canonical query)`, and the signature is
`base64(HMAC-SHA1(secret + "&", StringToSign))`.

The functions below are shared with the simulator, which verifies what the gateway signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from urllib.parse import parse_qsl

import httpx

from gateway.rfc3986 import percent_encode

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def canonical_query(params: Mapping[str, str]) -> str:
    """The sorted, encoded `name=value` pairs joined with `&`."""
    return "&".join(
        f"{percent_encode(name)}={percent_encode(value)}" for name, value in sorted(params.items())
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    # `percent_encode` of the canonical query, spelled out: once encoded, the query holds only
    # unreserved characters, `%`, `=` and `&`, so encoding it again is these three replacements
    # (several times cheaper than `quote` on a long text, and every upstream call is signed).
    encoded = canonical_query(params).replace("%", "%25").replace("&", "%26").replace("=", "%3D")
    return f"{method.upper()}&%2F&{encoded}"


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    """The V1 `Signature` of a request with these parameters (`Signature` itself excluded)."""
    unsigned = {name: value for name, value in params.items() if name != "Signature"}
    digest = hmac.new(
        f"{secret}&".encode(), string_to_sign(method, unsigned).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def utc_timestamp(epoch_seconds: float) -> str:
    """The `Timestamp` format the RPC API expects: `YYYY-MM-DDThh:mm:ssZ`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def request_params(request: httpx.Request) -> dict[str, str]:
    """Every signed parameter of a request: its query string plus a form body, if any."""
    params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    if request.headers.get("content-type", "").startswith(FORM_CONTENT_TYPE):
        params.update(parse_qsl(request.content.decode(), keep_blank_values=True))
    return params


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{percent_encode(name)}={percent_encode(value)}" for name, value in pairs)


class RpcSignatureV1(httpx.Auth):
    """Adds the common parameters (`AccessKeyId`, `Timestamp`, `SignatureNonce`, ...) to a request
    and signs it. Operation parameters (`Action`, `Version`, `Format`, ...) are the caller's.

    The secret and the token stay inside this object: `repr()` shows neither.
    """

    requires_request_body = True

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._access_key_id = access_key_id
        self._secret = access_key_secret
        self._security_token = security_token
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"{type(self).__name__}(access_key_id={self._access_key_id!r})"

    def signed_form(self, query: Mapping[str, str], form: Mapping[str, str]) -> dict[str, str]:
        """The form body of a signed POST whose query string carries `query`: `form`, the common
        parameters and the `Signature` (what `auth_flow` sends for a form POST, without building
        a request to read them back: the gateway signs every upstream call with this)."""
        body = dict(form) | self._common()
        # Sign exactly what a server reads back (`request_params`: the form body over the query
        # string, the merge the official SDK signs too), so that a name sent both in the query
        # and in the body is signed with the value the server uses.
        body["Signature"] = sign("POST", dict(query) | body, self._secret)
        return body

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.method == "POST" and _is_form(request):
            # A form POST carries the credentials in its body: URLs end up in logs (httpx's own,
            # proxies'), and the security token and signature have no business there.
            query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
            form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
            yield _with_form_body(request, self.signed_form(query, form))
            return
        query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True)) | self._common()
        request.url = request.url.copy_with(query=encode_query(query.items()).encode())
        query["Signature"] = sign(request.method, request_params(request), self._secret)
        request.url = request.url.copy_with(query=encode_query(query.items()).encode())
        yield request

    def _common(self) -> dict[str, str]:
        """The parameters every signed request carries besides its own."""
        common = {
            "AccessKeyId": self._access_key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": self._nonce(),
            "Timestamp": utc_timestamp(self._clock()),
        }
        if self._security_token:
            common["SecurityToken"] = self._security_token
        return common


def _is_form(request: httpx.Request) -> bool:
    content_type: str = request.headers.get("content-type", "")
    return content_type.startswith(FORM_CONTENT_TYPE)


def _with_form_body(request: httpx.Request, params: Mapping[str, str]) -> httpx.Request:
    """A copy of `request` whose form body is `params` (and whose Content-Length says so)."""
    headers = [
        (name, value) for name, value in request.headers.raw if name.lower() != b"content-length"
    ]
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=encode_query(params.items()).encode(),
        extensions=request.extensions,
    )
