"""What a newcomer runs exists: the CLI, docker-compose's commands and variables, the README."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import AliasChoices

from gateway.__main__ import build_parser
from gateway.settings import GatewaySettings, SimulatorSettings
from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).parent.parent


def setting_env_names() -> set[str]:
    names = set()
    for settings_class, prefix in (
        (GatewaySettings, "GATEWAY_"),
        (SimulatorSettings, "SIMULATOR_"),
    ):
        for field_name, field in settings_class.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.add(str(alias.choices[0]))
            else:
                names.add(prefix + field_name.upper())
    return names


def test_console_script_is_the_module_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"mps-gateway": "gateway.__main__:main"}


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
        "services"
    ]
    return services


def test_compose_commands_and_variables_exist() -> None:
    services = compose_services()
    known = setting_env_names()
    assert services, "docker-compose.yml defines no service"
    for name, service in services.items():
        if "build" not in service:
            # A third-party image (Redis): its command is its own, and it reads none of ours.
            assert service["image"], name
            assert "environment" not in service, name
            continue
        command = service["command"]
        assert command[0] == "mps-gateway", name
        build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown option
        unknown = set(service.get("environment", {})) - known
        assert unknown == set(), f"{name} sets variables no setting reads: {unknown}"


def test_compose_replicas_share_one_redis_and_know_how_many_they_are() -> None:
    services = compose_services()
    gateways = {
        name: service["environment"]
        for name, service in services.items()
        if service.get("command", [None])[:2] == ["mps-gateway", "serve"]
    }
    assert len(gateways) >= 2, "docker-compose.yml should show replicas sharing a budget"
    urls = {env.get("GATEWAY_REDIS_URL") for env in gateways.values()}
    assert len(urls) == 1, f"the replicas use different Redis URLs: {urls}"
    (url,) = urls
    assert url is not None
    host = urlsplit(url).hostname
    assert host in services, f"GATEWAY_REDIS_URL names {host}, which is no compose service"
    assert services[host]["image"].startswith("redis:")
    for name, env in gateways.items():
        # Each replica's fallback share (qps // replicas) is only safe with the true count.
        assert int(env["GATEWAY_EXPECTED_REPLICAS"]) == len(gateways), name


def test_dockerfile_command_exists() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert cmd is not None
    command = yaml.safe_load(cmd.group(1))
    assert command[0] == "mps-gateway"
    build_parser().parse_args(command[1:])


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    undocumented = {name for name in setting_env_names() if f"`{name}`" not in readme}
    assert undocumented == set()


def test_readme_starts_with_the_run_and_test_commands() -> None:
    first_block = (ROOT / "README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:]]
    assert commands[:2] == ["./scripts/serve", "./scripts/test"]
    for command in commands[:2]:
        assert os.access(ROOT / shlex.split(command)[0], os.X_OK)


@pytest.mark.slow
def test_serve_with_no_credentials_runs_the_embedded_simulator_and_says_where() -> None:
    with GatewayProcess() as gateway:  # no credentials, no endpoint: nothing set at all
        banner = gateway.output()
        sample_ids = re.findall(r'"([0-9a-f]{32})"', banner)
        assert sample_ids
        response = httpx.post(
            gateway.graphql_url,
            json={"query": f'{{ job(id: "{sample_ids[0]}") {{ id state }} }}'},
            timeout=30,
        )
    assert f"http://127.0.0.1:{gateway.port}/graphql" in banner
    assert "EMBEDDED MPS SIMULATOR" in banner
    assert response.json() == {"data": {"job": {"id": sample_ids[0], "state": "SUCCESS"}}}


@pytest.mark.slow
def test_export_schema_prints_the_sdl() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "export-schema"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == (ROOT / "schema.graphql").read_text()


@pytest.mark.parametrize("argv", [["serve", "--port", "x"], ["nope"]])
def test_bad_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def _serve_in(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of `./scripts/serve` and pyproject.toml in `tmp_path`, whose `python3`, venv
    python and `mps-gateway` only log their command lines: what the script would run."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "serve", tmp_path / "scripts" / "serve")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    log = tmp_path / "commands.log"
    fake_bin = tmp_path / "bin"
    venv_bin = tmp_path / ".venv" / "bin"
    fake_bin.mkdir()
    venv_bin.mkdir(parents=True)

    def fake(path: Path, body: str) -> None:
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    # python3 runs the script's hash for real; `-m venv` is only logged.
    fake(
        fake_bin / "python3",
        f'if [ "$1" = "-m" ]; then echo "python3 $*" >> {log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"',
    )
    fake(venv_bin / "python", f'echo "python $*" >> {log}')
    fake(venv_bin / "mps-gateway", f'echo "mps-gateway $*" >> {log}')
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    return tmp_path / "scripts" / "serve", log, env


def test_serve_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    serve, log, env = _serve_in(tmp_path)

    def run() -> list[str]:
        log.unlink(missing_ok=True)
        subprocess.run([str(serve), "--port", "8123"], env=env, check=True, timeout=60)
        return log.read_text().splitlines()

    installs = [
        "python3 -m venv .venv",
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .",
        "mps-gateway serve --port 8123",
    ]
    assert run() == installs  # first start: nothing installed yet
    assert run() == ["mps-gateway serve --port 8123"]  # nothing changed: straight to serving
    (tmp_path / "pyproject.toml").write_text(
        (tmp_path / "pyproject.toml").read_text() + "\n# a new dependency, say\n"
    )
    assert run() == installs
    assert run() == ["mps-gateway serve --port 8123"]
