"""Which upstream the gateway talks to, and the one `httpx.AsyncClient` that reaches it."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from gateway.credentials import Credentials, account_credentials
from gateway.mps.pool import upstream_transport
from gateway.mps.signing import RpcSignatureV1
from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind

#: Seconds an idle upstream connection is kept for reuse. A server that closes idle connections
#: sooner races the reuse (the request meets a connection closing under it), so the simulator
#: keeps them longer (`SIMULATOR_KEEP_ALIVE`), as a cloud's front ends do.
UPSTREAM_KEEPALIVE = 30.0


def embedded_simulator(
    settings: GatewaySettings, simulator: Starlette | None = None
) -> Starlette | None:
    """The simulator app the gateway runs on when `settings` embed one (no credentials, no
    endpoint): `simulator`, or a new one (`SimulatorSettings()` from the environment, its moving
    demo jobs starting now). None for any other upstream, which refuses a `simulator`."""
    if settings.upstream_kind is not UpstreamKind.EMBEDDED_SIMULATOR:
        if simulator is not None:
            raise ValueError(
                "Expected no embedded simulator for a gateway on the "
                f"{settings.upstream_kind.value}, received one."
            )
        return None
    if simulator is not None:
        return simulator
    # Imported only when embedded: a gateway on the cloud never loads the simulator.
    from gateway.simulator.app import create_simulator_app

    return create_simulator_app(SimulatorSettings())


def open_upstream_http(
    settings: GatewaySettings,
    credentials: Credentials | None = None,
    *,
    simulator: Starlette | None = None,
) -> httpx.AsyncClient:
    """A client with the upstream's base URL, timeouts and signing. For the embedded simulator
    (`embedded_simulator(settings, simulator)`) the transport is in-process
    (`httpx.ASGITransport`) and the credentials are the simulator's; everything above this
    function is the same for the cloud and the simulator. `credentials` default to
    `account_credentials(settings)`, the choice every signer of the gateway shares."""
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    embedded = embedded_simulator(settings, simulator)
    credentials = credentials or account_credentials(settings)
    auth = RpcSignatureV1(
        credentials.access_key_id, credentials.access_key_secret, credentials.security_token
    )
    # Connections stay open between calls (half a minute idle, not httpx's 5 s): a call on a
    # warm connection is one round trip, and a budget slot holds exactly that.
    limits = httpx.Limits(
        max_connections=settings.upstream_concurrency,
        max_keepalive_connections=settings.upstream_concurrency,
        keepalive_expiry=UPSTREAM_KEEPALIVE,
    )
    transport: httpx.AsyncBaseTransport = (
        upstream_transport(limits) if embedded is None else httpx.ASGITransport(app=embedded)
    )
    return httpx.AsyncClient(
        base_url=settings.upstream_url,
        auth=auth,
        timeout=timeout,
        limits=limits,
        transport=transport,
        headers={"user-agent": "mps-gateway/0.1"},
    )
