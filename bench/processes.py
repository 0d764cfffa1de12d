"""Servers as child processes for the benchmarks: start, wait until they answer, stop.

Every server a benchmark measures runs in its own process (a real uvicorn on a free loopback
port), so the load generator in the benchmark process never shares an interpreter or a GIL with
it. Ports come from `tests.support.ports`, as for the tests' servers: a child that finds its port
taken is started again on another. `ServerGroup` stops everything it started when its block
ends, on an error or Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from tests.support.ports import AddressInUse, says_address_in_use, start_on_free_port
from tests.support.processes import listens

#: The repository root: children run there, so `python -m bench.<name>` and `-m gateway` import.
REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

#: The GATEWAY_ADMIN_TOKEN every gateway the benchmarks start is given, so that they can read
#: `/readyz`'s detailed report (`ADMIN_HEADERS`). A benchmark value, no secret.
ADMIN_TOKEN = "bench-admin-token-not-a-secret"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}

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


def scrub_environment_and_say() -> None:
    """`scrub_environment`, and print the names it removed (if any)."""
    removed = scrub_environment()
    if removed:
        print(f"ignoring (removed from the children's environment): {', '.join(removed)}")


def run_main(name: str, benchmark: Callable[[], int]) -> int:
    """`benchmark()`'s exit code. A server that failed to start or answered wrongly (a
    `RuntimeError`) gives no figures: `RESULT <name> valid=no reason=setup` and 2; a Ctrl-C
    gives no result and 130."""
    try:
        return benchmark()
    except RuntimeError as exc:
        print(f"SETUP FAILED: {exc}")
        print(f"RESULT {name} valid=no reason=setup")
        return 2
    except KeyboardInterrupt:
        # ServerGroup has stopped every server by the time the interrupt gets here.
        print("interrupted: no result", file=sys.stderr)
        return 130


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


def run_queue_seconds(pid: int) -> float | None:
    """Seconds the process's main thread has been ready to run but waited for a core, from
    /proc/<pid>/schedstat (None where there is none): on a shared machine, how long other work
    kept a server (whose event loop is its main thread) from answering."""
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return None
    return int(fields[1]) / 1e9


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat
    (None where there is none). Over a run, busy / elapsed is the cores every process used,
    ours and anyone else's: on a shared machine, what the benchmark's processes could not have."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal (guest time is inside user already).
    total = sum(ticks[:8])
    idle = ticks[3] + ticks[4]
    clock = os.sysconf("SC_CLK_TCK")
    return (total - idle) / clock, total / clock


@dataclass(slots=True)
class Server:
    """A server child process and where it answers."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    #: `http` for the Python servers, `redis` for `start_redis`'s: what `url` starts with.
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

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

        def start_on(port: int) -> Server:
            command = [sys.executable, *(arg.replace("{port}", str(port)) for arg in args)]
            server = self._spawn(name, command, port, env)
            self._wait_ready(server, ready_path, ready_headers or {}, timeout)
            return server

        return start_on(port) if port else start_on_free_port(start_on)

    def start_redis(
        self, name: str = "redis", *, port: int | None = None, timeout: float = 10.0
    ) -> Server:
        """A private, throw-away `redis-server` on a free loopback port (or `port`: to start one
        again where a killed one was): nothing saved to disk (`--save ""`, no append-only
        file), so it leaves no file behind and shares no state with any other Redis. Returns
        once it answers PING; its `url` is `redis://127.0.0.1:<port>`."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis)."
            )

        def start_on(port: int) -> Server:
            command = [executable, "--port", str(port), "--bind", HOST]
            command += ["--save", "", "--appendonly", "no"]
            server = self._spawn(name, command, port, None, scheme="redis")
            self._wait_until(server, lambda: _redis_answers(port), "PING", timeout)
            return server

        return start_on(port) if port else start_on_free_port(start_on)

    def _spawn(
        self,
        name: str,
        command: list[str],
        port: int,
        env: dict[str, str] | None,
        *,
        scheme: str = "http",
    ) -> Server:
        log_path = self._folder / f"{name}.log"
        child_env = {**os.environ, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, port, process, log_path, scheme)
        self._servers.append(server)
        return server

    def kill(self, server: Server) -> None:
        """SIGKILL one server and wait for it to end: a crash, with no shutdown of any kind
        (a Redis killed so loses everything it held)."""
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        if server in self._servers:
            self._servers.remove(server)

    def stop(self, server: Server, timeout: float = 10.0) -> None:
        """Stop one server (see `stop_all`)."""
        self._stop([server], timeout)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every server still running, all at once, in at most about `timeout` seconds."""
        self._stop(list(reversed(self._servers)), timeout)

    def _stop(self, servers: list[Server], timeout: float, grace: float = 2.0) -> None:
        """SIGINT to all (uvicorn's graceful shutdown, Redis's shutdown); after `grace`, a
        second SIGINT to those still running (uvicorn's force exit: an interrupted benchmark
        leaves requests open that a graceful shutdown would wait for, up to their deadline);
        SIGKILL to any still running at `timeout`. All at once, so that stopping a fleet
        costs one wait, not one per process."""
        running = [server for server in servers if server.process.poll() is None]
        for server in running:
            server.process.send_signal(signal.SIGINT)
        started = time.monotonic()
        for deadline, last_resort in ((grace, False), (timeout, True)):
            for server in running:
                left = max(0.0, started + deadline - time.monotonic())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(left)
            running = [server for server in running if server.process.poll() is None]
            for server in running:
                if last_resort:
                    server.process.kill()
                    server.process.wait()
                else:
                    server.process.send_signal(signal.SIGINT)
        for server in servers:
            if server in self._servers:
                self._servers.remove(server)

    def fail(self, server: Server, message: str) -> RuntimeError:
        """An error about `server` that shows the end of its log (and keeps the logs)."""
        self._keep_logs = True
        return RuntimeError(
            f"{message}\n--- last lines of {server.log_path} ---\n{server.log_tail()}"
        )

    def _wait_ready(
        self, server: Server, path: str, headers: dict[str, str], timeout: float
    ) -> None:
        with httpx.Client(base_url=server.url, timeout=2.0, trust_env=False) as client:

            def answers() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return client.get(path, headers=headers).status_code == 200
                return False

            self._wait_until(server, answers, f"GET {path}", timeout)

    def _wait_until(
        self, server: Server, probe: Callable[[], bool], what: str, timeout: float
    ) -> None:
        """Return once the child answers `probe` on its own socket. A child that exits first
        because its port was taken raises `AddressInUse` (and is forgotten: the caller starts
        another on another port); one that exits for another reason, or does not answer within
        `timeout`, raises `fail`."""
        deadline = time.monotonic() + timeout
        while True:
            if server.process.poll() is not None:
                if says_address_in_use(server.log_path.read_text(errors="replace")):
                    self._servers.remove(server)
                    raise AddressInUse(server.port, f"{server.name} said so.")
                raise self.fail(
                    server,
                    f"{server.name} exited with code {server.process.returncode} before it "
                    "answered.",
                )
            # Its own socket first: another server that holds the port would answer the probe.
            if listens(server.process.pid, server.port) and probe():
                return
            if time.monotonic() > deadline:
                raise self.fail(server, f"{server.name} did not answer {what} within {timeout} s.")
            time.sleep(0.1)


def _redis_answers(port: int) -> bool:
    """Whether a Redis on `port` answers PING with PONG (not LOADING or an error) now. Spoken
    in raw RESP so that the probe needs no client library and no connection pool."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
