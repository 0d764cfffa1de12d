"""The presigner against the official OSS SDK, on fixed clocks and random keys."""

from __future__ import annotations

import calendar
import re
import time
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.credentials import Credentials
from gateway.model import OssObject
from gateway.oss import MAX_EXPIRES_SECONDS, MIN_EXPIRES_SECONDS, OssPresigner
from tests.oss.official import official_presign, official_v4_url, query_of

AK = "LTAI5tPresignTestKeyId"
SECRET = "presign-test-secret-0123456789abcdef"
TOKEN = "CAIS+sts/token==with&odd=chars"
# 2024-11-15T09:50:58Z, the x-oss-date of the documented example (docs/upstream.md section 6.3).
SIGNED_AT = calendar.timegm((2024, 11, 15, 9, 50, 58))
EXAMPLE = OssObject(
    bucket="examplebucket",
    endpoint="oss-cn-hangzhou.aliyuncs.com",
    key="exampleobject.txt",
    region="cn-hangzhou",
)


def presigner(token: str | None = None, at: float = SIGNED_AT) -> OssPresigner:
    return OssPresigner(Credentials(AK, SECRET, token), clock=lambda: at)


def official(
    obj: OssObject, token: str | None = None, at: int = SIGNED_AT, expires: int = 3600
) -> str:
    return official_v4_url(
        obj,
        access_key_id=AK,
        access_key_secret=SECRET,
        security_token=token,
        signed_at=at,
        expires=expires,
    )


def object_at(key: str, region: str = "cn-shanghai", bucket: str = "media-out") -> OssObject:
    return OssObject(bucket=bucket, endpoint=f"oss-{region}.aliyuncs.com", key=key, region=region)


# --- fixed values -----------------------------------------------------------------------------


def test_a_fixed_clock_gives_the_official_sdks_url_byte_for_byte() -> None:
    url = presigner().presign_get(EXAMPLE, 3600)

    assert url == official(EXAMPLE)
    # A regression vector: the same inputs must keep giving the same URL.
    assert url == (
        "https://examplebucket.oss-cn-hangzhou.aliyuncs.com/exampleobject.txt"
        "?x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-date=20241115T095058Z"
        "&x-oss-expires=3600"
        f"&x-oss-credential={AK}%2F20241115%2Fcn-hangzhou%2Foss%2Faliyun_v4_request"
        "&x-oss-signature=2af071bfbf704e131128586dea6a18f00c53c2e9c0e767056da12191f92ae010"
    )


def test_the_documented_example_as_far_as_it_is_reproducible() -> None:
    # docs/upstream.md section 6.3 (doc 39607): the id is masked (LTAI****) and the signature cut
    # (6e7a...), so the secret is unknown: host, path, every parameter but the signature, and
    # the signature's form are what can be reproduced.
    documented = (
        "https://examplebucket.oss-cn-hangzhou.aliyuncs.com/exampleobject.txt?x-oss-date="
        "20241115T095058Z&x-oss-expires=3600&x-oss-signature-version=OSS4-HMAC-SHA256&"
        "x-oss-credential=LTAI****%2F20241115%2Fcn-hangzhou%2Foss%2Faliyun_v4_request&"
        "x-oss-signature=6e7a"
    )
    url = OssPresigner(Credentials("LTAI****", SECRET), clock=lambda: SIGNED_AT).presign_get(
        EXAMPLE, 3600
    )
    assert url is not None

    assert url.split("?")[0] == documented.split("?")[0]
    ours, theirs = query_of(url), query_of(documented)
    assert ours.pop("x-oss-signature") != theirs.pop("x-oss-signature")
    assert ours == theirs
    assert re.fullmatch("[0-9a-f]{64}", query_of(url)["x-oss-signature"])
    # `/` in the credential travels as %2F, as the documentation requires.
    assert "%2F20241115%2Fcn-hangzhou%2Foss%2Faliyun_v4_request" in url


def test_an_sts_token_is_sent_and_signed() -> None:
    url = presigner(TOKEN).presign_get(EXAMPLE, 3600)
    assert url is not None

    assert url == official(EXAMPLE, TOKEN)
    assert query_of(url)["x-oss-security-token"] == TOKEN
    assert "x-oss-security-token=CAIS%2Bsts%2Ftoken%3D%3Dwith%26odd%3Dchars&" in url
    other = presigner(TOKEN + "x").presign_get(EXAMPLE, 3600)
    assert other is not None
    assert query_of(other)["x-oss-signature"] != query_of(url)["x-oss-signature"]


def test_an_empty_token_is_no_token() -> None:
    url = presigner("").presign_get(EXAMPLE, 3600)
    assert url == presigner(None).presign_get(EXAMPLE, 3600)
    assert url is not None
    assert "x-oss-security-token" not in url


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("iproduction/a b.mp4", "/iproduction/a%20b.mp4"),
        ("视频/结果.mp4", "/%E8%A7%86%E9%A2%91/%E7%BB%93%E6%9E%9C.mp4"),
        ("a+b.jpg", "/a%2Bb.jpg"),
        ("100%.jpg", "/100%25.jpg"),
        ("~user/x_y-z.jpg", "/~user/x_y-z.jpg"),
        ("a?b#c&d=e;f*g.srt", "/a%3Fb%23c%26d%3De%3Bf%2Ag.srt"),
        ("deep/er//x.jpg", "/deep/er//x.jpg"),
        ("/leading.jpg", "//leading.jpg"),
        ("emoji 🎬.mp4", "/emoji%20%F0%9F%8E%AC.mp4"),
    ],
)
def test_keys_are_percent_encoded_with_the_slash_kept(key: str, path: str) -> None:
    obj = object_at(key)
    url = presigner().presign_get(obj, 60)
    assert url is not None

    assert urlsplit(url).path == path
    assert unquote(urlsplit(url).path)[1:] == key
    assert url == official(obj, expires=60)


def test_the_public_presign_api_of_the_sdk_agrees() -> None:
    # The SDK's documented entry point reads the wall clock itself: sign with ours at the date
    # and expiry it chose, and the two URLs must be the same.
    obj = object_at("iproduction/clip 01+final.mp4")
    url = official_presign(
        obj, access_key_id=AK, access_key_secret=SECRET, security_token=TOKEN, expires=900
    )
    query = query_of(url)
    signed_at = calendar.timegm(time.strptime(query["x-oss-date"], "%Y%m%dT%H%M%SZ"))
    expires = int(query["x-oss-expires"])
    assert expires in (899, 900)  # the SDK reads its clock twice

    assert presigner(TOKEN, at=signed_at).presign_get(obj, expires) == url


# --- time and bounds --------------------------------------------------------------------------


def test_the_clock_is_read_once_and_its_fraction_dropped() -> None:
    reads: list[float] = []

    def clock() -> float:
        reads.append(SIGNED_AT + 0.999)
        return reads[-1]

    url = OssPresigner(Credentials(AK, SECRET), clock=clock).presign_get(EXAMPLE, 5)
    assert url is not None

    assert len(reads) == 1
    assert query_of(url)["x-oss-date"] == "20241115T095058Z"
    assert url == official(EXAMPLE, expires=5)


def test_the_scope_date_is_the_utc_date_of_the_signing_time() -> None:
    last_second = calendar.timegm((2024, 12, 31, 23, 59, 59))
    obj = object_at("x.jpg", region="ap-southeast-1")
    for at, date in ((last_second, "20241231"), (last_second + 1, "20250101")):
        url = presigner(at=at).presign_get(obj, 3600)
        assert url is not None
        assert query_of(url)["x-oss-credential"] == (
            f"{AK}/{date}/ap-southeast-1/oss/aliyun_v4_request"
        )
        assert url == official(obj, at=at)


@pytest.mark.parametrize("expires", [MIN_EXPIRES_SECONDS, 3600, MAX_EXPIRES_SECONDS])
def test_expiry_within_bounds_is_kept_exactly(expires: int) -> None:
    url = presigner().presign_get(EXAMPLE, expires)
    assert url is not None
    assert query_of(url)["x-oss-expires"] == str(expires)
    assert url == official(EXAMPLE, expires=expires)


@pytest.mark.parametrize("expires", [-1, 0, MAX_EXPIRES_SECONDS + 1, 10**9])
def test_expiry_out_of_bounds_is_refused_not_clamped(expires: int) -> None:
    with pytest.raises(ValueError, match=f"from 1 to 604800 seconds, received {expires}"):
        presigner().presign_get(EXAMPLE, expires)


def test_bounds_are_one_second_to_seven_days() -> None:
    assert (MIN_EXPIRES_SECONDS, MAX_EXPIRES_SECONDS) == (1, 7 * 24 * 3600)


# --- what is not signed, and what never shows -------------------------------------------------


def test_an_object_without_a_region_is_not_signed() -> None:
    accelerated = OssObject("media-out", "oss-accelerate.aliyuncs.com", "x.jpg", region=None)
    assert presigner().presign_get(accelerated, 3600) is None


def test_a_key_that_is_not_unicode_text_is_not_signed() -> None:
    # A JSON `Result` may carry "\ud800"; no OSS key can.
    assert presigner().presign_get(object_at("bad\ud800.jpg"), 3600) is None


def test_the_secret_never_shows() -> None:
    credentials = Credentials(AK, SECRET, TOKEN)
    signer = OssPresigner(credentials, clock=lambda: SIGNED_AT)
    url = signer.presign_get(EXAMPLE, 3600)
    assert url is not None

    assert SECRET not in url
    assert SECRET not in repr(credentials)
    assert TOKEN not in repr(credentials)
    assert SECRET not in repr(signer)
    assert signer.access_key_id == AK


# --- random keys, times, regions and tokens ---------------------------------------------------

# Keys: any Unicode text but lone surrogates (not encodable, so never an OSS key), weighted
# toward the characters encoders get wrong.
KEYS = st.text(
    st.one_of(
        st.sampled_from(list(" /+%~*?#&=;:@!$'()[],\"<>\\^`{|}\t\n")),
        st.characters(exclude_categories=["Cs"]),
    ),
    min_size=1,
    max_size=120,
)
REGIONS = st.sampled_from(
    ["cn-hangzhou", "cn-shanghai", "cn-beijing", "ap-southeast-1", "eu-central-1", "us-west-1"]
)
BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{2,30}", fullmatch=True)
TOKENS = st.none() | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80
)


@settings(max_examples=300, deadline=None)
@given(
    key=KEYS,
    region=REGIONS,
    bucket=BUCKETS,
    token=TOKENS,
    at=st.integers(min_value=0, max_value=4_102_444_800),  # up to 2100
    fraction=st.floats(min_value=0, max_value=0.999),
    expires=st.integers(min_value=MIN_EXPIRES_SECONDS, max_value=MAX_EXPIRES_SECONDS),
)
def test_random_objects_match_the_official_sdk(
    key: str, region: str, bucket: str, token: str | None, at: int, fraction: float, expires: int
) -> None:
    obj = object_at(key, region=region, bucket=bucket)

    url = presigner(token, at=at + fraction).presign_get(obj, expires)

    assert url == official(obj, token, at=at, expires=expires)
    assert url is not None
    assert unquote(urlsplit(url).path)[1:] == key
    assert urlsplit(url).hostname == f"{bucket}.oss-{region}.aliyuncs.com"
