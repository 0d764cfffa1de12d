"""Real servers for tests: any ASGI app on a real port, served by uvicorn in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def run_asgi_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    lifespan: str = "auto",
    startup_timeout: float = 10.0,
) -> Iterator[str]:
    """Serve `app` on a free port of `host` until the block ends; yields its base URL
    (`http://127.0.0.1:<port>`).

    The server runs in a daemon thread with its own event loop, so both sync clients (the official
    SDK) and async tests can call it. Leaving the block stops the server and waits for the thread.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=0,  # the OS picks a free port; it is read back from the bound socket
        lifespan=lifespan,
        # The sans-I/O implementation: the legacy one imports deprecated websockets APIs, whose
        # warnings would fail tests.
        ws="websockets-sansio",
        # No dictConfig of its own: uvicorn's records go to the root logger, where pytest
        # captures them (and shows them with a failing test).
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("The test server stopped before it started listening.")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"The test server did not start within {startup_timeout} s.")
        time.sleep(0.005)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
