"""Starting `python -m gateway serve`: refused in one line with real credentials and no
GATEWAY_AUTH, or a key file it cannot use; the banner says how callers authenticate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.banner import callers_line
from gateway.settings import GatewaySettings
from tests.support.gateway import gateway_environment

pytestmark = pytest.mark.slow


def serve(variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        env=gateway_environment(variables),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_real_credentials_without_gateway_auth_refuse_to_start() -> None:
    done = serve(
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3"}
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "mps-gateway: bad settings: Expected GATEWAY_AUTH (jwt, api-key, or none"
    )
    assert "s3" not in line


def test_an_unusable_keys_file_refuses_to_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": [{"name": "x"}]}')
    done = serve({"GATEWAY_AUTH": "api-key", "GATEWAY_API_KEYS_FILE": str(keys)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "mps-gateway: bad settings: Expected entry 0 of GATEWAY_API_KEYS_FILE to have scopes "
        "among jobs:read, jobs:submit, jobs:read:all."
    ]


def test_the_banner_says_how_callers_authenticate() -> None:
    none = callers_line(GatewaySettings.model_validate({}))
    assert none.startswith("callers: NO AUTHENTICATION (GATEWAY_AUTH=none)")
    keys = GatewaySettings.model_validate({"auth": "api-key", "api_keys_file": "/k.json"})
    assert callers_line(keys) == "callers: authenticated by api-key (GATEWAY_AUTH)"
