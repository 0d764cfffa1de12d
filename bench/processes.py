"""Servers as child processes for the benchmarks: start, wait until they answer, stop.

Every server a benchmark measures runs in its own process (a real uvicorn on a free loopback
port), so the load generator in the benchmark process never shares an interpreter or a GIL with
it. `ServerGroup` stops everything it started when its block ends, on an error or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx

#: The repository root: children run there, so `python -m bench.<name>` and `-m gateway` import.
REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

#: Variables that would change what the servers do (credentials, endpoint, limits, TTLs, faults).
#: The benchmarks remove them from their own environment, so children inherit known defaults
#: and set only what each benchmark sets on purpose.
_SCRUBBED_PREFIXES = ("ALIBABA_CLOUD_", "GATEWAY_", "SIMULATOR_")


def scrub_environment() -> list[str]:
    """Remove the gateway's, the simulator's and the cloud's variables from this process's
    environment; return their names (never their values: one may be a secret)."""
    removed = sorted(name for name in os.environ if name.startswith(_SCRUBBED_PREFIXES))
    for name in removed:
        del os.environ[name]
    return removed


def free_port() -> int:
    """A loopback port free right now. The OS may hand it out again before the child binds it;
    on a benchmark host that race is rare, and the child then fails loudly at start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used, from /proc (None where there is no /proc):
    tells whether a server was saturated while it was measured."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Server:
    """A server child process and where it answers."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class ServerGroup:
    """Starts servers as child processes and stops them all when the `with` block ends.

    Children get their own session, so a Ctrl-C in the terminal reaches only the benchmark, which
    then stops them in order; SIGTERM and SIGHUP to the benchmark are turned into the same exit.
    Each child's output goes to a log file in a temporary folder (kept when a server fails, for
    reading, and deleted otherwise).
    """

    def __init__(self) -> None:
        self._servers: list[Server] = []
        self._folder = Path(tempfile.mkdtemp(prefix="mps-bench-"))
        self._keep_logs = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ServerGroup:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, _exit_on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._keep_logs:
            print(f"server logs kept in {self._folder}", file=sys.stderr)
        else:
            for path in self._folder.iterdir():
                path.unlink()
            self._folder.rmdir()

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        ready_path: str,
        ready_headers: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """Run `python <args>` with `{port}` in `args` replaced by a free port (or `port`), and
        return once `GET ready_path` answers 200. `env` is added to this process's environment."""
        port = port or free_port()
        log_path = self._folder / f"{name}.log"
        child_env = {**os.environ, **(env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *(arg.replace("{port}", str(port)) for arg in args)],
                cwd=REPO_ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, port, process, log_path)
        self._servers.append(server)
        self._wait_ready(server, ready_path, ready_headers or {}, timeout)
        return server

    def stop(self, server: Server, timeout: float = 10.0) -> None:
        """SIGINT (uvicorn's graceful shutdown), then SIGKILL if it does not end in time."""
        process = server.process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if server in self._servers:
            self._servers.remove(server)

    def stop_all(self) -> None:
        for server in reversed(list(self._servers)):
            self.stop(server)

    def fail(self, server: Server, message: str) -> RuntimeError:
        """An error about `server` that shows the end of its log (and keeps the logs)."""
        self._keep_logs = True
        return RuntimeError(
            f"{message}\n--- last lines of {server.log_path} ---\n{server.log_tail()}"
        )

    def _wait_ready(
        self, server: Server, path: str, headers: dict[str, str], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=server.url, timeout=2.0, trust_env=False) as client:
            while True:
                if server.process.poll() is not None:
                    raise self.fail(
                        server,
                        f"{server.name} exited with code {server.process.returncode} before it "
                        "answered.",
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(path, headers=headers).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise self.fail(
                        server, f"{server.name} did not answer GET {path} within {timeout} s."
                    )
                time.sleep(0.1)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
