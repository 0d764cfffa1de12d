"""The official OSS SDK (`alibabacloud-oss-v2`) as an independent signer to check ours against.

A test dependency only: the gateway signs with `gateway.oss.presign`, and these helpers compute
what the SDK makes of the same object, credentials, signing time and expiry.
"""

from __future__ import annotations

import datetime
from urllib.parse import parse_qsl, urlsplit

import alibabacloud_oss_v2 as oss  # type: ignore[import-untyped]
from alibabacloud_oss_v2.credentials import (  # type: ignore[import-untyped]
    StaticCredentialsProvider,
)
from alibabacloud_oss_v2.signer import SignerV4  # type: ignore[import-untyped]
from alibabacloud_oss_v2.types import HttpRequest, SigningContext  # type: ignore[import-untyped]

from gateway.model import OssObject


def official_v4_url(
    obj: OssObject,
    *,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    signed_at: int,
    expires: int,
) -> str:
    """The SDK's V4 query signature (`SignerV4`) of a GET of `obj`, made at `signed_at` (Unix
    seconds) and valid for `expires` seconds, on the object's own https URL."""
    credentials = StaticCredentialsProvider(
        access_key_id, access_key_secret, security_token
    ).get_credentials()
    request = HttpRequest("GET", obj.https_url)
    signing_time = datetime.datetime.fromtimestamp(signed_at, tz=datetime.UTC)
    context = SigningContext(
        product="oss",
        region=obj.region,
        bucket=obj.bucket,
        key=obj.key,
        request=request,
        credentials=credentials,
        signing_time=signing_time,
    )
    context.expiration_time = signing_time + datetime.timedelta(seconds=expires)
    context.auth_method_query = True
    SignerV4().sign(context)
    url: str = request.url
    return url


def official_presign(
    obj: OssObject,
    *,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    expires: int,
) -> str:
    """The SDK's public API, `Client.presign(GetObjectRequest)`, as its documentation shows it: the
    SDK reads the wall clock itself. Offline: presigning makes no request."""
    config = oss.config.load_default()
    config.credentials_provider = StaticCredentialsProvider(
        access_key_id, access_key_secret, security_token
    )
    config.region = obj.region
    config.endpoint = obj.endpoint
    client = oss.Client(config)
    result = client.presign(
        oss.GetObjectRequest(bucket=obj.bucket, key=obj.key),
        expires=datetime.timedelta(seconds=expires),
    )
    url: str = result.url
    return url


def query_of(url: str) -> dict[str, str]:
    """The decoded query parameters of `url` (each name once)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True))
