"""A fleet on 127.0.0.1: gateway processes (real `python -m gateway serve` subprocesses), one
simulator, and a Redis server of the test's own that it can stop and restart."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET
from tests.api.conftest import SimulatorServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s.")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A private redis-server process: stopping it is a real outage."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (.ci/run installs it)"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, f"redis-server on port {self.port} answering")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=5).json()
        return body


@contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[GatewayProcess]:
    port = free_port()
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ALIBABA_CLOUD_", "GATEWAY_", "SIMULATOR_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env={**base, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateway = GatewayProcess(url=f"http://127.0.0.1:{port}", process=process)
    try:
        wait_until(
            lambda: process.poll() is None and httpx.get(f"{gateway.url}/healthz").is_success,
            30,
            f"gateway on port {port} answering",
        )
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def fleet(
    simulator: SimulatorServer, redis: RedisServer, size: int, **settings: str
) -> Iterator[list[GatewayProcess]]:
    """`size` gateway processes sharing one budget and cache in `redis`."""
    env = {
        "GATEWAY_MPS_ENDPOINT": simulator.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        "GATEWAY_EXPECTED_REPLICAS": str(size),
        "GATEWAY_REQUEST_DEADLINE": "60",
        "GATEWAY_RETRY_BASE_DELAY": "0.05",
        "GATEWAY_LOG_LEVEL": "WARNING",
        **settings,
    }
    with ExitStack() as stack:
        yield [stack.enter_context(gateway_process(env)) for _ in range(size)]
