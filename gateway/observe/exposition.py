"""Serving /metrics: on the app's own port (`metrics_endpoint`), or on a private listener of
its own (`MetricsListener`, for `GATEWAY_METRICS_PORT`).

Both render `Metrics.registry` with prometheus-client's own exposition (the text format, or
OpenMetrics when the scraper asks for it; gzip when it accepts it). Neither is behind CORS or
any other middleware of the app: a browser page of another origin gets nothing to read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_asgi_app, make_wsgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.observe.metrics import Metrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["METRICS_PATH", "MetricsListener", "ServeMetrics", "health_report"]

METRICS_PATH = "/metrics"


class ServeMetrics:
    """Plain ASGI middleware that answers `GET /metrics` itself, before `app` (and whatever
    middleware `app` has, CORS included) sees the request. The sampled gauges are sampled
    first, so a scrape reads this process's state as it is now."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self._metrics = metrics
        self._render = make_asgi_app(metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            self._metrics.sample()
            await self._render(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _with_report(metrics_app: WSGIApplication, report: Report | None) -> WSGIApplication:
    if report is None:
        return metrics_app

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in REPORT_PATHS:
            return metrics_app(environ, start_response)
        status, body = report()
        reason = "OK" if status == 200 else "Service Unavailable"
        start_response(f"{status} {reason}", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is no news


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # Every worker of `uvicorn --workers` listens on the port, and the kernel spreads the
    # scrapes: in multiprocess mode any of them answers for all.
    allow_reuse_port = hasattr(socket, "SO_REUSEPORT")


#: What the private listener answers on `/healthz` and `/readyz`: an HTTP status and a JSON
#: body (`gateway.health`'s detailed report, the listener being private).
Report = Callable[[], tuple[int, dict[str, Any]]]

#: Paths the private listener answers with the report rather than the metrics.
REPORT_PATHS: Final = ("/healthz", "/readyz")


def health_report(
    make: Callable[[], Coroutine[Any, Any, tuple[int, dict[str, Any]]]],
    loop: asyncio.AbstractEventLoop,
) -> Report:
    """The listener's report: `make()` (`gateway.health.Health.answer`) run on the app's event
    loop (where the services live), from the listener's thread. A loop that does not answer
    within `REPORT_TIMEOUT` is reported as such (503), never waited for."""

    def report() -> tuple[int, dict[str, Any]]:
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return future.result(REPORT_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            future.cancel()
            return 503, {"status": "unresponsive"}

    return report


#: Seconds the listener waits for the event loop to make the report.
REPORT_TIMEOUT: Final = 10.0


class MetricsListener:
    """/metrics (any path but `REPORT_PATHS`, in fact) on `host`:`port`, in a thread of its
    own: it answers even while the event loop is busy, which is when one most wants to look.
    Its gauges are the ones the app's sampler set last (at most a few seconds old). With a
    `report`, `/healthz` and `/readyz` answer the detailed report."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, *, report: Report | None = None
    ) -> None:
        _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = make_server(
            host,
            port,
            _with_report(make_wsgi_app(metrics.registry), report),
            _Server,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics listener", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose, for port 0)."""
        port: int = self._server.server_address[1]
        return port

    def close(self) -> None:
        """Stop listening (blocks for up to half a second: the serving loop's poll)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
