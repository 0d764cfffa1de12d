"""Settings derived from others: the fallback budget share, and where Redis is (no password)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("qps", "replicas", "share"), [(100, 1, 100), (100, 2, 50), (100, 3, 33), (2, 5, 1)]
)
def test_fallback_share_of_the_budget(qps: int, replicas: int, share: int) -> None:
    settings = GatewaySettings(upstream_qps=qps, expected_replicas=replicas)
    assert settings.fallback_qps == share


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("redis://:hunter2@cache.internal:6380/0", "cache.internal:6380"),
        ("rediss://user:hunter2@cache.internal/1", "cache.internal:6379"),
        ("redis://cache.internal", "cache.internal:6379"),
        ("unix://user:hunter2@/run/redis.sock?db=0", "/run/redis.sock"),
    ],
)
def test_redis_location_never_holds_the_password(url: str, location: str) -> None:
    settings = GatewaySettings(redis_url=SecretStr(url))
    assert settings.redis_location == location
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_no_redis_by_default() -> None:
    settings = GatewaySettings()
    assert settings.redis_url is None
    assert settings.redis_location is None
    assert (settings.redis_prefix, settings.redis_timeout, settings.expected_replicas) == (
        "mpsgw",
        0.5,
        1,
    )


@pytest.mark.parametrize(
    "values",
    [{"redis_prefix": ""}, {"redis_prefix": "two words"}, {"redis_timeout": 0},
     {"expected_replicas": 0}],
)  # fmt: skip
def test_bad_redis_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"access_key_id": "LTAIx"}, "received only ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ({"access_key_secret": "s"}, "received only ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        ({"security_token": "t"}, "received the token alone"),
    ],
)
def test_half_a_key_pair_is_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(**values)


def test_a_refused_setting_never_shows_the_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(access_key_secret="topsecret123", upstream_qps=0)
    assert "topsecret123" not in str(refused.value)
