"""`upstream_transport`: httpx's transport on a connection pool whose cost does not grow with the
calls in flight.

httpcore's `AsyncConnectionPool` (1.0) hands a queued request the first connection that is
idle, but a connection stays idle until the request assigned to it actually starts on it (its
task has to run first). Under a burst (the budget grants up to a limit's worth of calls at once)
every request of the burst is handed the same idle connection; all but one fail on it with
`ConnectionNotAvailable` and are handed the next one, and so on: n requests cost about n * n / 2
assignment passes, each of which walks every connection of the pool (and counts its idle
connections once per idle connection, n * n again), and asks each idle socket, through anyio,
whether the server closed it. Measured on a 32-call burst against the simulator, that was most
of the gateway's CPU per upstream call, all of it spent while a budget slot was held.

`LeanConnectionPool` keeps httpcore's connections, request queue and streams, and replaces only
the assignment: a connection already assigned to a request is not offered to another one, and an
idle connection is checked for expiry (keep-alive timeout, closed by the server) when it is about
to be reused, not on every pass. Each call is then one assignment when it starts and one when its
response is closed, each linear in the connections. HTTP/1.1 only (the upstream speaks it; HTTP/2
would multiplex requests on one connection, which this assignment does not do).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpcore
import httpx

__all__ = ["ConnectionStats", "LeanConnectionPool", "connection_stats", "upstream_transport"]


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The upstream connections of a process: `opened` since it started (each one a TCP and
    TLS handshake inside some call's budget slot), and `open` now. Far fewer opened than calls
    made means calls run on warm keep-alive connections, one round trip each."""

    opened: int
    open: int


class LeanConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with the assignment described in the module docstring."""

    #: Connections this pool has made (see `ConnectionStats`).
    opened = 0

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        self.opened += 1
        return super().create_connection(origin)

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        # Connections a request was handed (it may not have started on them yet): not free.
        taken = {id(request.connection) for request in self._requests if request.connection}
        free: list[httpcore.AsyncConnectionInterface] = []
        kept: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                continue
            if id(connection) not in taken and connection.is_idle():
                free.append(connection)
            kept.append(connection)
        # Surplus idle connections beyond the keep-alive limit are closed, oldest first.
        surplus = len(free) - self._max_keepalive_connections
        for connection in free[: max(0, surplus)]:
            kept.remove(connection)
            closing.append(connection)
        free = free[max(0, surplus) :]
        self._connections = kept

        for request in self._requests:
            if not request.is_queued():
                continue
            origin = request.request.url.origin
            chosen = self._reusable(free, origin, closing)
            if chosen is None and len(self._connections) < self._max_connections:
                chosen = self.create_connection(origin)
                self._connections.append(chosen)
            elif chosen is None and free:
                # Full: an idle connection to another origin makes room for this one.
                stale = free.pop(0)
                self._connections.remove(stale)
                closing.append(stale)
                chosen = self.create_connection(origin)
                self._connections.append(chosen)
            if chosen is None:
                continue  # every connection is busy: it waits for a release
            request.assign_to_connection(chosen)
        return closing

    def _reusable(
        self,
        free: list[httpcore.AsyncConnectionInterface],
        origin: httpcore.Origin,
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first idle connection to `origin` that is still good (removed from `free`), as
        httpcore's pool chooses; expired ones met on the way are closed."""
        index = 0
        while index < len(free):
            connection = free[index]
            if not connection.can_handle_request(origin):
                index += 1
                continue
            del free[index]
            if connection.has_expired() or not connection.is_available():
                self._connections.remove(connection)
                closing.append(connection)
                continue
            return connection
        return None


def connection_stats(http: httpx.AsyncClient) -> ConnectionStats | None:
    """The connections of a client made by `upstream_transport`; None for another transport
    (the embedded simulator's is in-process and has none)."""
    # httpx exposes neither a client's transport nor a transport's pool: both are read where
    # `upstream_transport` put them.
    transport = getattr(http, "_transport", None)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, LeanConnectionPool):
        return None
    return ConnectionStats(opened=pool.opened, open=len(pool.connections))


def upstream_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's default transport (TLS verified with certifi, as httpx's own), on a
    `LeanConnectionPool` of `limits`."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx builds its pool in __init__ and offers no other way to choose its class.
    transport._pool = LeanConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
    )
    return transport
