"""`/healthz` and `/readyz`: answers for orchestrators, and a report for operators.

An orchestrator (a load balancer, Kubernetes, Docker's healthcheck) needs the status alone:
`/healthz` says the process runs (`ok`), `/readyz` whether to send it traffic (`ready`, or
`degraded` while Redis is configured but unreachable: both 200; `starting` and `stopping`: 503).
That is all anyone who reaches the port is told.

The detailed report (budget, cache, claims, fetcher, Redis failover and its last error) is for
operators: on the main port it needs `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>` (compared in
constant time), and on the private metrics listener (`GATEWAY_METRICS_PORT`) it is served to
whoever reaches that port. Its errors never name a host, a port or a socket path: where Redis
runs is for the logs only.

Neither answer is behind CORS (`gateway.app` serves them before the CORS middleware): a page of
another origin reads nothing of them.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http_errors import ErrorResponse
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = [
    "HEALTH_PATH",
    "READY_PATH",
    "UNAUTHORIZED",
    "Health",
    "Readiness",
    "ServeHealth",
    "without_locations",
]

HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
#: 401: an Authorization header on /readyz that does not hold GATEWAY_ADMIN_TOKEN.
UNAUTHORIZED: Final = "UNAUTHORIZED"


class Readiness(enum.Enum):
    """What /readyz answers, and with which HTTP status."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"  # still serving: each process on its own budget share and cache
    STOPPING = "stopping"  # draining after SIGTERM: finish what runs, take nothing new

    @property
    def http_status(self) -> int:
        return 200 if self in (Readiness.READY, Readiness.DEGRADED) else 503


# "10.0.0.5:6379", "[::1]:6379", "redis.internal:6380", and what redis-py says around them
# ("connecting to redis.internal:6379.", "connecting to unix socket: /run/redis.sock.").
_CONNECTING_TO: Final = re.compile(r"connecting to (?:unix socket: )?\S+?(?=\.?(?:\s|$))")
_HOST_PORT: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}\b")
_PATH: Final = re.compile(r"(?<![\w.])/[\w.@-]+(?:/[\w.@-]+)+")


def without_locations(text: str) -> str:
    """`text` (an error's message) without the hosts, ports and socket paths it names."""
    text = _CONNECTING_TO.sub("connecting to Redis", text)
    text = _HOST_PORT.sub("<host>", text)
    return _PATH.sub("<path>", text)


class Health:
    """The status and the report of one app; `services` is None until the lifespan starts
    (and after it ends)."""

    def __init__(self, settings: GatewaySettings, services: Callable[[], Services | None]) -> None:
        self._settings = settings
        self._services = services
        self._stopping = False
        token = settings.admin_token
        self._token = None if token is None else token.get_secret_value().encode()

    def begin_draining(self) -> None:
        """SIGTERM arrived: /readyz answers `stopping` from now on."""
        self._stopping = True

    async def readiness(self) -> Readiness:
        readiness, _ = await self._assess()
        return readiness

    async def _assess(self) -> tuple[Readiness, bool]:
        """The status, and whether Redis answered a PING just now (False without Redis)."""
        services = self._services()
        if services is None:
            return Readiness.STOPPING if self._stopping else Readiness.STARTING, False
        reachable = await services.probe_redis()
        if self._stopping:
            return Readiness.STOPPING, reachable
        degraded = services.redis is not None and (not reachable or services.degraded)
        return Readiness.DEGRADED if degraded else Readiness.READY, reachable

    async def report(self) -> tuple[Readiness, dict[str, Any]]:
        """The status, and the detailed report (camelCase keys, no locations)."""
        readiness, reachable = await self._assess()
        services = self._services()
        body: dict[str, Any] = {"status": readiness.value}
        if services is None:
            return readiness, body
        details = services.report()
        redis_report = details.pop("redis")
        assert isinstance(redis_report, dict)
        failover = redis_report.get("failover")
        if isinstance(failover, dict) and failover.get("last_error"):
            failover["last_error"] = without_locations(str(failover["last_error"]))
        body |= _camel_keys(
            {
                "upstream": self._settings.upstream_kind.value,
                "redis": {**redis_report, "reachable": reachable},
                **details,
            }
        )
        return readiness, body

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and the body of the detailed report."""
        readiness, body = await self.report()
        return readiness.http_status, body

    def admits(self, authorization: str | None) -> bool | None:
        """Whether an `Authorization` header grants the report: None when none was sent (or no
        token is set: then the main port grants nothing), else whether it holds the token."""
        if authorization is None or self._token is None:
            return None
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        granted = self.admits(request.headers.get("authorization"))
        if granted is False:
            return ErrorResponse(
                401,
                "The Authorization header does not hold the admin token (GATEWAY_ADMIN_TOKEN).",
                UNAUTHORIZED,
                headers={"www-authenticate": 'Bearer realm="mps-gateway"'},
            )
        if granted:
            readiness, body = await self.report()
            return JSONResponse(body, status_code=readiness.http_status)
        readiness = await self.readiness()
        return JSONResponse({"status": readiness.value}, status_code=readiness.http_status)


class ServeHealth:
    """Plain ASGI middleware answering `/healthz` and `/readyz` before `app` and its
    middleware (CORS included) see the request."""

    def __init__(self, app: ASGIApp, *, health: Health) -> None:
        self.app = app
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == HEALTH_PATH:
                await (await self._health.healthz(Request(scope)))(scope, receive, send)
                return
            if path == READY_PATH:
                await (await self._health.readyz(Request(scope)))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _camel_keys(value: Any) -> Any:
    """`value` with every dict key in camelCase (`in_flight` -> `inFlight`), as the rest of
    what the gateway answers (GraphQL fields, error extensions) is spelled."""
    if isinstance(value, dict):
        return {_camel(str(key)): _camel_keys(item) for key, item in value.items()}
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)
