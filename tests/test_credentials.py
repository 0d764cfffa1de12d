"""One credential choice for every signer: cloud keys when set, the simulator's demo pair else."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from gateway.credentials import Credentials, account_credentials
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
)

CLOUD_SECRET = "cloud-secret-value-0123456789"
CLOUD_TOKEN = "cloud-sts-token-value"
DEMO = Credentials(SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET)


def settings(**values: object) -> GatewaySettings:
    # Explicit None values win over whatever the environment holds.
    base: dict[str, object] = {
        "access_key_id": None,
        "access_key_secret": None,
        "security_token": None,
        "mps_endpoint": None,
    }
    return GatewaySettings(**{**base, **values})  # type: ignore[arg-type]


def test_the_embedded_simulator_uses_its_own_key_pair(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.credentials"):
        assert account_credentials(settings()) == DEMO
    assert caplog.records == []


@pytest.mark.parametrize("endpoint", [None, "https://mts-vpc.cn-shanghai.aliyuncs.com"])
def test_cloud_credentials_are_used_with_or_without_an_endpoint(endpoint: str | None) -> None:
    chosen = account_credentials(
        settings(
            access_key_id="LTAIcloud",
            access_key_secret=SecretStr(CLOUD_SECRET),
            security_token=SecretStr(CLOUD_TOKEN),
            mps_endpoint=endpoint,
            auth="none",
        )
    )
    assert chosen == Credentials("LTAIcloud", CLOUD_SECRET, CLOUD_TOKEN)


def test_an_endpoint_without_credentials_signs_with_the_demo_pair_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.credentials"):
        chosen = account_credentials(settings(mps_endpoint="http://simulator:9000"))

    assert chosen == DEMO
    assert [record.getMessage() for record in caplog.records] == [
        "GATEWAY_MPS_ENDPOINT is set but no ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET: signing with "
        f"the simulator's demo key pair ({SIMULATOR_DEMO_ACCESS_KEY_ID})."
    ]


def test_the_secret_and_token_stay_out_of_repr() -> None:
    text = repr(Credentials("LTAIcloud", CLOUD_SECRET, CLOUD_TOKEN))
    assert "LTAIcloud" in text
    assert CLOUD_SECRET not in text
    assert CLOUD_TOKEN not in text
