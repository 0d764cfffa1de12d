"""Server child processes on loopback ports: start one until it answers, then stop it, kill it,
pause it, or start it again where it was.

`ServerProcess.start()` runs a command on a free port, trying another port when the child says
"address already in use" (see `tests.support.ports`), and returns once the child answers. Then
`stop()` ends it (SIGTERM, then SIGKILL), `kill()` makes an outage (SIGKILL: nothing is shut down
or flushed), `pause()`/`resume()` freeze it (SIGSTOP/SIGCONT: its connections stay open and
nothing answers), and `restart()` starts it again on the same port, where its clients look for
it. Each child's output (stdout and stderr) goes to a log file; a child that fails to start
raises an error that shows the end of it, and its log is kept.

Linux only: a child counts as started once its own socket listens (read from /proc) and it
answers, never on the word of another server that happens to hold the port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tests.support.ports import AddressInUse, says_address_in_use, start_on_free_port
from tests.support.waiting import SAFETY_TIMEOUT, wait_until

__all__ = ["ServerProcess", "listens"]

#: Seconds a child is given to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 10.0
#: The state of a listening socket in /proc/net/tcp.
_LISTEN: Final = "0A"


class ServerProcess:
    """One server child process on a loopback port (see the module docstring).

    `command(port)` is its command line; `ready(port)` says whether it answers now (an `OSError`
    it raises counts as "not yet"). `env` replaces the environment the child inherits (None:
    this process's). `startup_timeout` only catches a child that hangs: starts wait for
    `ready`, not for a duration.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], Sequence[str]],
        ready: Callable[[int], bool],
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = SAFETY_TIMEOUT,
    ) -> None:
        self.name = name
        self._command = command
        self._ready = ready
        self._env = None if env is None else dict(env)
        self._startup_timeout = startup_timeout
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output_offset = 0
        handle, path = tempfile.mkstemp(prefix=f"test-{name}-", suffix=".log")
        os.close(handle)
        #: Everything the child printed, over all its starts.
        self.log_path = Path(path)

    @property
    def port(self) -> int:
        """The port of the last successful start."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started.")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the child process exists and has not exited (a paused one is running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} has not been started.")
        return self._process.pid

    def start(self) -> None:
        """Start on a free port; return once the child answers.

        Raises `RuntimeError` when the child exits for another reason than a taken port, and
        `TimeoutError` when it neither answers nor exits within `startup_timeout`.
        """
        self._refuse_if_running()
        start_on_free_port(self._start_on)

    def restart(self) -> None:
        """Start again on the port of the last start (after `kill()` or `stop()`); return once
        the child answers. Raises `AddressInUse` when another process took the port meanwhile."""
        self._refuse_if_running()
        self._start_on(self.port)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the child, as an operator would: SIGTERM (to a paused child too), SIGKILL if it
        is still there after `timeout` seconds. Does nothing when it is not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only then
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """End the child at once with SIGKILL: an outage, nothing shut down or saved."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def pause(self) -> None:
        """Freeze the child (SIGSTOP): its connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused child run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def output(self) -> str:
        """What the child printed since its last successful start began (earlier starts and
        lost races excluded)."""
        return self._printed_since(self._output_offset)

    def close(self) -> None:
        """Stop the child and delete its log."""
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        """Start the child (`start()`); the block's end `close()`s it. A child that fails to
        start is stopped, and its log kept for reading."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _refuse_if_running(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is running already (pid {self.pid}).")

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running.")
        self._process.send_signal(signum)

    def _start_on(self, port: int) -> None:
        offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                list(self._command(port)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        self._process = process

        def exited_or_ready() -> bool:
            if process.poll() is not None:
                return True
            # The child's own socket first: another server already on the port (the race a
            # retry handles) would answer `ready` while the child is about to exit.
            return listens(process.pid, port) and self._ready(port)

        try:
            wait_until(
                exited_or_ready,
                f"{self.name} answering on port {port}",
                within=self._startup_timeout,
                ignore=(OSError,),
            )
        except TimeoutError as exc:
            self.kill()
            raise TimeoutError(f"{exc}\n{self._tail(offset)}") from None
        if process.poll() is not None:
            self._process = None
            if says_address_in_use(self._printed_since(offset)):
                raise AddressInUse(port, f"{self.name} said so.")
            raise RuntimeError(
                f"{self.name} exited with code {process.returncode} before it answered on port "
                f"{port}.\n{self._tail(offset)}"
            )
        self._port = port
        self._output_offset = offset

    def _printed_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _tail(self, offset: int, lines: int = 20) -> str:
        last = self._printed_since(offset).splitlines()[-lines:]
        return f"--- the last lines of {self.log_path} ---\n" + "\n".join(last)


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (any address), from /proc.

    Tells the child that was started from another process that happens to serve the port.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)  # the header
            for row in rows:
                # sl local_address rem_address st ... uid timeout inode: "0100007F:18EB", "0A".
                fields = row.split()
                if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    descriptors = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError):  # the process is gone
        for descriptor in descriptors.iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                if os.readlink(descriptor) in inodes:
                    return True
    return False
