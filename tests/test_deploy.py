"""What a newcomer runs exists: the CLI, docker-compose's commands and variables, the README."""

from __future__ import annotations

import hashlib
import json
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
import jsonschema
import pytest
import yaml
from pydantic import AliasChoices, ValidationError

from gateway.__main__ import build_parser
from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind
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


COMPOSE_SCHEMA = ROOT / "tests" / "compose" / "compose-spec.json"
#: The profiles docker-compose.yml offers: the demo on a simulator, and the cloud.
PROFILES = ("demo", "cloud")
#: The image every service of this project runs, built once per profile.
IMAGE = "mps-gateway:local"
#: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`...
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


def compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose_file()["services"]
    return services


def active_services(profile: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose --profile <profile> up` starts: those of no profile, and
    those of `profile`."""
    return {
        name: service
        for name, service in compose_services().items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def ours(service: dict[str, Any]) -> bool:
    """Whether a service runs this project's image (not a third-party one, Redis)."""
    return service.get("image") == IMAGE


def gateways(profile: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in active_services(profile).items()
        if service.get("command", [None])[:2] == ["mps-gateway", "serve"]
    }


def compose_validator() -> jsonschema.protocols.Validator:
    """The Compose Specification's schema, read as the draft it declares (2019-09: its
    `$schema` is spelled in a way the library does not look up by itself)."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09/")
    validator: jsonschema.protocols.Validator = jsonschema.Draft201909Validator(schema)
    return validator


def test_compose_file_follows_the_compose_specification() -> None:
    compose_validator().validate(compose_file())


@pytest.mark.parametrize(
    "mistake",
    [
        {"depends_on": {"redis": {"condition": "when_ready"}}},
        {"healthcheck": {"test": ["CMD", "true"], "intervall": "5s"}},
        {"profile": ["demo"]},
    ],
)
def test_the_schema_catches_a_misspelt_service(mistake: dict[str, Any]) -> None:
    document = compose_file()
    document["services"]["redis"] = {**document["services"]["redis"], **mistake}
    assert list(compose_validator().iter_errors(document)) != []


def test_compose_schema_is_the_vendored_one() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in (ROOT / "tests" / "compose" / "README.md").read_text()


def test_compose_commands_and_variables_exist() -> None:
    services = compose_services()
    known = setting_env_names()
    assert services, "docker-compose.yml defines no service"
    for name, service in services.items():
        if not ours(service):
            # A third-party image (Redis): its command is its own, and it reads none of ours.
            assert service["image"].startswith("redis:"), name
            assert "environment" not in service, name
            continue
        command = service["command"]
        assert command[0] == "mps-gateway", name
        build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown option
        environment = service.get("environment", {})
        unknown = set(environment) - known
        assert unknown == set(), f"{name} sets variables no setting reads: {unknown}"
        for variable, value in environment.items():
            # A value taken from the shell is one of the gateway's variables, passed on.
            for referenced in INTERPOLATION.findall(str(value)):
                assert referenced == variable, (name, variable, value)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_builds_one_image_once_and_runs_it_everywhere(profile: str) -> None:
    services = active_services(profile)
    built = [name for name, service in services.items() if "build" in service]
    assert len(built) == 1, f"{profile}: the image is built by {built}"
    assert services[built[0]]["image"] == IMAGE
    for name, service in services.items():
        assert ours(service) or service["image"].startswith("redis:"), name


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_starts_in_order_of_health(profile: str) -> None:
    services = active_services(profile)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        dependencies = service.get("depends_on", {})
        assert isinstance(dependencies, dict), f"{name}: depends_on without conditions"
        for dependency, condition in dependencies.items():
            assert dependency in services, f"{profile}: {name} depends on {dependency}, not started"
            assert condition == {"condition": "service_healthy"}, (name, dependency)


@pytest.mark.parametrize("profile", PROFILES)
def test_gateways_are_probed_on_healthz_of_their_port(profile: str) -> None:
    for name, service in gateways(profile).items():
        port = service["command"][service["command"].index("--port") + 1]
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in probe, name
        # The drain and the requests under way fit in what Docker waits before SIGKILL.
        grace = float(service["environment"].get("GATEWAY_SHUTDOWN_GRACE", 0))
        assert grace > 0, name
        assert _seconds(service["stop_grace_period"]) > grace, name


def test_the_demo_runs_on_the_simulator_and_the_cloud_without_it() -> None:
    demo, cloud = active_services("demo"), active_services("cloud")
    assert "simulator" in demo
    assert "simulator" not in cloud
    for name, service in gateways("demo").items():
        assert service["environment"]["GATEWAY_MPS_ENDPOINT"] == "http://simulator:9000", name
    for name, service in gateways("cloud").items():
        environment = service["environment"]
        assert "GATEWAY_MPS_ENDPOINT" not in environment, name
        assert "simulator" not in json.dumps(service), name
        for variable in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
            # From the shell: unset there, blank here, which the gateway refuses.
            assert environment[variable] == f"${{{variable}:-}}", name
    # The two profiles' replicas publish the same ports: the README's URLs hold for both.
    assert [s["ports"] for s in gateways("demo").values()] == [
        s["ports"] for s in gateways("cloud").values()
    ]


def container_environment(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """What a service's process gets in its environment when Compose runs in `shell`: a
    `${NAME:-default}` is the shell's value unless empty, else the default; a variable with no
    value is the shell's, or unset."""

    def interpolate(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2) or ""
        return shell.get(name) or default

    environment = {}
    for name, value in service.get("environment", {}).items():
        if value is None:
            if name in shell:
                environment[name] = shell[name]
            continue
        environment[name] = re.sub(r"\$\{(\w+):-([^}]*)\}", interpolate, str(value))
    return environment


def settings_in(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return GatewaySettings()


@pytest.mark.parametrize(
    "shell",
    [
        {},
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3"},
        {"GATEWAY_AUTH": "none"},
    ],
    ids=["nothing set", "keys without GATEWAY_AUTH", "GATEWAY_AUTH without keys"],
)
def test_the_cloud_profile_refuses_to_start_unless_told_enough(
    shell: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (service, *_) = gateways("cloud").values()
    # Never the demo, never the account served to anyone: a refusal, in one line.
    with pytest.raises(ValidationError):
        settings_in(container_environment(service, shell), monkeypatch)


def test_the_cloud_profile_serves_the_cloud_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIreal",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3",
        "ALIBABA_CLOUD_REGION_ID": "cn-shanghai",
        "GATEWAY_AUTH": "jwt",
        "GATEWAY_JWT_JWKS_URL": "https://idp.example/jwks.json",
        "GATEWAY_JWT_ISSUER": "https://idp.example/",
        "GATEWAY_JWT_AUDIENCE": "mps-gateway",
    }
    for service in gateways("cloud").values():
        settings = settings_in(container_environment(service, shell), monkeypatch)
        assert settings.upstream_kind is UpstreamKind.CLOUD
        assert settings.upstream_url == "https://mts.cn-shanghai.aliyuncs.com/"
        assert settings.auth_methods == {"jwt"}
        assert settings.redis_url is not None


def test_the_demo_profile_needs_nothing_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in gateways("demo").values():
        settings = settings_in(container_environment(service, {}), monkeypatch)
        assert settings.upstream_kind is UpstreamKind.ENDPOINT


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_replicas_share_one_redis_and_know_how_many_they_are(profile: str) -> None:
    services = active_services(profile)
    replicas = {name: service["environment"] for name, service in gateways(profile).items()}
    assert len(replicas) >= 2, "docker-compose.yml should show replicas sharing a budget"
    urls = {env.get("GATEWAY_REDIS_URL") for env in replicas.values()}
    assert len(urls) == 1, f"the replicas use different Redis URLs: {urls}"
    (url,) = urls
    assert url is not None
    host = urlsplit(url).hostname
    assert host in services, f"GATEWAY_REDIS_URL names {host}, which is no compose service"
    assert services[host]["image"].startswith("redis:")
    for name, env in replicas.items():
        # Each replica's fallback share (qps // replicas) is only safe with the true count.
        assert int(env["GATEWAY_EXPECTED_REPLICAS"]) == len(replicas), name


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_command_exists() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile(), re.MULTILINE)
    assert cmd is not None
    command = yaml.safe_load(cmd.group(1))
    assert command[0] == "mps-gateway"
    build_parser().parse_args(command[1:])


def test_the_image_runs_as_a_user_and_is_probed_on_healthz() -> None:
    text = dockerfile()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users, "the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The user is switched to after the install, and before the command.
    assert text.rindex("RUN ") < text.rindex("USER ") < text.rindex("CMD ")
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE | re.DOTALL)
    assert healthcheck is not None
    assert "http://127.0.0.1:8000/healthz" in healthcheck.group(1)


def test_the_build_context_leaves_out_what_the_image_does_not_copy() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests", "**/__pycache__"} <= ignored
    copied = [
        source
        for line in re.findall(r"^COPY (.+)$", dockerfile(), re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert copied, "the Dockerfile copies nothing"
    for source in copied:
        assert source not in ignored, f"the Dockerfile copies {source}, which .dockerignore drops"
        assert (ROOT / source).exists(), source


def _seconds(duration: str) -> float:
    """A Compose duration of one unit ("30s", "2m") in seconds."""
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


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
