"""GATEWAY_AUTH and its companions: safe by default, and each method with what it needs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, GatewaySettings

CLOUD = {"access_key_id": "LTAIrealkey", "access_key_secret": "s"}
JWT = {
    "auth": "jwt",
    "jwt_jwks_url": "https://id.example.test/jwks",
    "jwt_issuer": "https://id.example.test/",
    "jwt_audience": "mps-gateway",
}


def settings(**values: Any) -> GatewaySettings:
    return GatewaySettings.model_validate(values)


def test_real_credentials_without_gateway_auth_refuse_to_start() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(**CLOUD)
    message = str(refused.value)
    assert "Expected GATEWAY_AUTH (jwt, api-key, or none" in message
    assert "with cloud credentials, received none" in message


@pytest.mark.parametrize("endpoint", [None, "https://mts-vpc.cn-shanghai.aliyuncs.com"])
def test_none_must_be_said_to_serve_an_account_unauthenticated(endpoint: str | None) -> None:
    assert settings(**CLOUD, mps_endpoint=endpoint, auth="none").auth_methods == frozenset()


def test_the_simulator_defaults_to_no_authentication() -> None:
    assert settings().auth_methods == frozenset()
    demo = settings(
        access_key_id=SIMULATOR_DEMO_ACCESS_KEY_ID,
        access_key_secret="x",
        mps_endpoint="http://127.0.0.1:9000",
    )
    assert demo.auth_methods == frozenset()


def test_methods_combine() -> None:
    both = settings(**{**JWT, "auth": "jwt, api-key"}, api_keys_file="/keys.json")
    assert both.auth_methods == frozenset({"jwt", "api-key"})


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"auth": "basic"}, "comma-separated list of jwt and api-key, or none alone"),
        ({"auth": "none,jwt"}, "none alone"),
        ({"auth": ""}, "none alone"),
        ({**JWT, "jwt_jwks_url": None}, "received neither."),
        ({**JWT, "jwt_jwks_file": "/jwks.json"}, "received both."),
        ({**JWT, "jwt_issuer": None}, "GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE"),
        ({"auth": "api-key"}, "Expected GATEWAY_API_KEYS_FILE with GATEWAY_AUTH=api-key"),
    ],
)
def test_each_method_needs_its_settings(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(**values)
