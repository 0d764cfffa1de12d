"""Every way of starting says the same: one banner with the same warnings, one line and exit
status 2 for a bad setting (never a traceback), and `--help` documents every option and every
variable with its default."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.__main__ import build_parser
from gateway.banner import startup_warnings
from gateway.settings import (
    SIMULATOR_DEMO_ACCESS_KEY_ID,
    SIMULATOR_DEMO_ACCESS_KEY_SECRET,
    GatewaySettings,
    SimulatorSettings,
)
from gateway.startup import environment_variable
from tests.support.gateway import gateway_environment
from tests.support.ports import HOST
from tests.support.processes import ServerProcess

BIN = Path(sys.executable).parent

#: The ways of starting a gateway on `port`, as the README gives them (`./scripts/serve` is
#: `mps-gateway serve` once installed; it is measured, not run, by the tests).
STARTS: dict[str, Callable[[int], list[str]]] = {
    "python -m gateway serve": lambda port: [
        *(sys.executable, "-m", "gateway", "serve", "--port", str(port))
    ],
    "mps-gateway serve": lambda port: [str(BIN / "mps-gateway"), "serve", "--port", str(port)],
    # The default command, on the default port: only refused here, never started.
    "mps-gateway": lambda port: [str(BIN / "mps-gateway")],
    "uvicorn --factory": lambda port: [
        *(sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"),
        *("--port", str(port)),
    ],
}

ENDPOINT = {
    "GATEWAY_MPS_ENDPOINT": "http://127.0.0.1:9/",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
}


def _healthy(port: int) -> bool:
    return httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).status_code == 200


def started_output(start: str, variables: dict[str, str]) -> str:
    """What a gateway started `start`'s way prints until it answers."""
    with ServerProcess(
        start, STARTS[start], _healthy, env=gateway_environment(variables)
    ) as server:
        return server.output()


@pytest.mark.slow
@pytest.mark.parametrize(
    "start", ["python -m gateway serve", "mps-gateway serve", "uvicorn --factory"]
)
@pytest.mark.parametrize(
    "variables", [{}, ENDPOINT], ids=["embedded simulator", "endpoint"]
)  # fmt: skip
def test_every_start_prints_the_same_warnings(start: str, variables: dict[str, str]) -> None:
    output = started_output(start, variables)
    expected = startup_warnings(GatewaySettings.model_validate(_as_fields(variables)))
    assert expected, "every configuration here deserves a warning"
    for warning in expected:
        assert f"!! {warning}" in output, (start, output)
    assert "mps-gateway: GraphiQL and the GraphQL endpoint at " in output


@pytest.mark.slow
def test_json_logs_carry_the_warnings_as_records() -> None:
    output = started_output("python -m gateway serve", {"GATEWAY_LOG_FORMAT": "json"})
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    warned = [record["message"] for record in records if record["level"] == "WARNING"]
    expected = startup_warnings(GatewaySettings.model_validate(_as_fields({})))
    assert warned[: len(expected)] == expected
    assert "!!" not in output


@pytest.mark.slow
@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GATEWAY_UPSTREAM_QPS", "abc", "expected an integer of at least 1"),
        ("GATEWAY_UPSTREAM_QPS", "0", "expected an integer of at least 1"),
        ("GATEWAY_LOG_FORMAT", "xml", "expected one of text, json"),
        ("GATEWAY_GRAPHIQL", "maybe", "expected true or false"),
        ("GATEWAY_ADMIN_TOKEN", "short", "expected text of at least 16 character(s), or unset"),
    ],
)
def test_a_bad_setting_is_one_line_and_status_2(
    start: str, variable: str, value: str, expected: str
) -> None:
    result = subprocess.run(
        STARTS[start](0),
        env=gateway_environment({variable: value}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("mps-gateway")]
    assert result.returncode == 2, result.stderr
    assert lines == [
        f"mps-gateway: bad setting {variable}: {expected}; " + lines[0].split("; ", 1)[1]
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert value not in lines[0] or value in expected  # the value is never echoed
    assert result.stdout == ""


@pytest.mark.slow
def test_a_rule_over_several_variables_is_one_line_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env=gateway_environment({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIonlyhalf"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mps-gateway: bad settings: Expected both ALIBABA_CLOUD_ACCESS_KEY_ID and "
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET, received only ALIBABA_CLOUD_ACCESS_KEY_ID."
    ]


@pytest.mark.slow
def test_a_bad_simulator_setting_names_its_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "simulator", "--port", "0"],
        env=gateway_environment({"SIMULATOR_ERROR_RATE": "2"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "mps-gateway simulator: bad setting SIMULATOR_ERROR_RATE: expected a number of at least "
        "0 and of at most 1;"
    )
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "settings_class"), [("serve", GatewaySettings), ("simulator", SimulatorSettings)]
)
def test_help_documents_every_option_and_variable_with_its_default(
    command: str, settings_class: type[GatewaySettings] | type[SimulatorSettings]
) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub: argparse.ArgumentParser = commands.choices[command]
    text = sub.format_help()
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        assert f"(default: {action.default})" in text, action.dest
    for name, info in settings_class.model_fields.items():
        variable = environment_variable(settings_class, name, info)
        assert f"  {variable} [" in text, variable
        assert (info.description or "").split()[0] in text, variable
    # The simulator's demo secret is public, yet no help page prints a secret's value.
    assert SIMULATOR_DEMO_ACCESS_KEY_SECRET not in text


def _as_fields(variables: dict[str, str]) -> dict[str, str | None]:
    """`variables` as GatewaySettings keyword arguments, everything else unset."""
    return {
        "mps_endpoint": variables.get("GATEWAY_MPS_ENDPOINT"),
        "access_key_id": variables.get("ALIBABA_CLOUD_ACCESS_KEY_ID"),
        "access_key_secret": variables.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
    }
