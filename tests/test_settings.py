"""Settings derived from others: the fallback budget share, and where Redis is (no password)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from gateway import startup
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
        GatewaySettings.model_validate(values)


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"access_key_id": "", "access_key_secret": "s"}, "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ({"access_key_id": " \t", "access_key_secret": "s"}, "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        ({"access_key_id": "LTAIx", "access_key_secret": ""}, "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        ({"access_key_id": "LTAIx", "access_key_secret": "\n"}, "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        ({"access_key_id": "", "access_key_secret": ""}, "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        (
            {"access_key_id": "LTAIx", "access_key_secret": "s", "security_token": " "},
            "ALIBABA_CLOUD_SECURITY_TOKEN",
        ),
        (
            {"access_key_id": "", "access_key_secret": "s", "mps_endpoint": "http://sim:9000"},
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
        ),
    ],
)
def test_a_blank_credential_is_refused_like_half_a_pair(values: dict[str, str], name: str) -> None:
    # A blank id used to pass: the gateway served the embedded demo, or signed with the demo
    # pair when an endpoint was set.
    with pytest.raises(ValidationError, match=f"Expected {name} to be unset or to hold a value"):
        GatewaySettings.model_validate(values)


def test_blank_credentials_from_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "a-secret")
    with pytest.raises(ValidationError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        GatewaySettings()


def test_a_refused_setting_never_shows_the_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        GatewaySettings.model_validate({"access_key_secret": "topsecret123", "upstream_qps": 0})
    assert "topsecret123" not in str(refused.value)


def test_the_admin_token_is_long_enough_and_never_shown() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(admin_token=SecretStr("too-short"))
    settings = GatewaySettings(admin_token=SecretStr("a-token-of-sixteen+"))
    assert "a-token-of-sixteen+" not in repr(settings)
    assert GatewaySettings().admin_token is None


@pytest.mark.parametrize("grace", [-1, 3601])
def test_a_shutdown_grace_out_of_range_is_refused(grace: float) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(shutdown_grace=grace)


def test_no_shutdown_grace_by_default() -> None:
    assert GatewaySettings().shutdown_grace == 0


@pytest.mark.parametrize(("given", "level"), [("info", "INFO"), (" Warning ", "WARNING")])
def test_log_levels_are_read_in_any_case(given: str, level: str) -> None:
    assert GatewaySettings(log_level=given).log_level == level


def test_an_unknown_log_level_is_refused_at_start_not_in_logging() -> None:
    with pytest.raises(ValidationError, match="Expected one of DEBUG, INFO, WARNING"):
        GatewaySettings(log_level="loud")


@pytest.mark.parametrize(
    ("field", "requirement"),
    [
        ("upstream_qps", "an integer of at least 1"),
        ("request_deadline", "a number over 0"),
        ("graphiql", "true or false"),
        ("log_format", "one of text, json"),
        ("metrics_port", "an integer of at least 0 and of at most 65535, or unset"),
        ("redis_prefix", r"text of at least 1 character(s) and matching ^\S+$"),
        ("admin_token", "text of at least 16 character(s), or unset"),
    ],
)
def test_each_setting_says_what_it_must_be(field: str, requirement: str) -> None:
    assert startup.requirement(GatewaySettings.model_fields[field]) == requirement


def test_every_setting_names_its_variable_and_requirement() -> None:
    for name, info in GatewaySettings.model_fields.items():
        variable = startup.environment_variable(GatewaySettings, name, info)
        assert variable.startswith(("GATEWAY_", "ALIBABA_CLOUD_")), variable
        assert startup.requirement(info), name


def test_a_refused_setting_line_never_shows_the_value() -> None:
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(admin_token=SecretStr("0123456789"), upstream_qps="hunter2")  # type: ignore[arg-type]
    lines = startup.bad_setting_lines(refused.value, GatewaySettings)
    assert [line.split(":")[0] for line in lines] == [
        "bad setting GATEWAY_UPSTREAM_QPS",
        "bad setting GATEWAY_ADMIN_TOKEN",
    ]
    assert not [line for line in lines if "hunter2" in line or "0123456789" in line]
