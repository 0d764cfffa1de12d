"""Loopback ports for servers that tests and benchmarks start, without the bind-then-release race.

A port that was free when a probe socket released it may be taken by anyone before the server
binds it. So:

- a server that can bind port 0 itself, or take a bound socket, does so and the port is read back
  from its socket (`tests.servers.run_asgi_server`): nothing can take it in between;
- a child process that needs its port on its command line (redis-server, `python -m gateway
  serve`) is started by `start_on_free_port`, which tries another port whenever the start fails
  with `AddressInUse`: a lost race costs one more start, never a failed test.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Final, TypeVar

__all__ = ["HOST", "AddressInUse", "candidate_port", "says_address_in_use", "start_on_free_port"]

HOST: Final = "127.0.0.1"
#: Starts tried before giving up: each loses only to another process binding the same port in the
#: moment between the probe and the start, so a second attempt almost always succeeds.
START_ATTEMPTS: Final = 5

T = TypeVar("T")

# What redis-server ("bind: Address already in use") and uvicorn ("[Errno 98] ... address
# already in use") print when the port is taken.
_IN_USE: Final = re.compile(r"address already in use", re.IGNORECASE)


class AddressInUse(Exception):
    """A server could not start because its port was taken (`port`)."""

    def __init__(self, port: int, detail: str = "") -> None:
        message = f"Port {port} of {HOST} is taken."
        super().__init__(f"{message} {detail}".strip())
        self.port = port


def candidate_port(host: str = HOST) -> int:
    """A port of `host` that was free a moment ago, chosen by the OS (bind to port 0).

    It may be taken again before the caller binds it: use it only through `start_on_free_port`
    (or another start that is retried on `AddressInUse`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def says_address_in_use(output: str) -> bool:
    """Whether a server's output says its port was taken (redis-server's and uvicorn's words)."""
    return _IN_USE.search(output) is not None


def start_on_free_port(start: Callable[[int], T], *, attempts: int = START_ATTEMPTS) -> T:
    """`start(port)` on a `candidate_port()`, again on another one each time it raises
    `AddressInUse`; returns what the first successful start returns.

    Raises the last `AddressInUse` after `attempts` lost races, and any other error of `start` at
    once (a server that fails for another reason would fail on every port).
    """
    if attempts < 1:
        raise ValueError(f"Expected at least 1 attempt, received {attempts}.")
    for _ in range(attempts - 1):
        try:
            return start(candidate_port())
        except AddressInUse:
            continue  # another process bound the port first: try another
    return start(candidate_port())
