"""Which upstream the gateway talks to, and the one `httpx.AsyncClient` that reaches it."""

from __future__ import annotations

import logging

import httpx

from gateway.mps.signing import RpcSignatureV1
from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind
from gateway.simulator.app import create_simulator_app

logger = logging.getLogger(__name__)


def open_upstream_http(settings: GatewaySettings) -> httpx.AsyncClient:
    """A client with the upstream's base URL, timeouts and signing. For the embedded simulator
    the transport is in-process (`httpx.ASGITransport`) and the credentials are the simulator's;
    everything above this function is the same for the cloud and the simulator."""
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    kind = settings.upstream_kind
    transport: httpx.AsyncBaseTransport | None = None
    if kind is UpstreamKind.EMBEDDED_SIMULATOR:
        simulator = SimulatorSettings()
        transport = httpx.ASGITransport(app=create_simulator_app(simulator))
        auth = RpcSignatureV1(
            simulator.access_key_id, simulator.access_key_secret.get_secret_value()
        )
    elif settings.access_key_id and settings.access_key_secret:
        token = settings.security_token.get_secret_value() if settings.security_token else None
        auth = RpcSignatureV1(
            settings.access_key_id, settings.access_key_secret.get_secret_value(), token
        )
    else:
        # An endpoint without credentials is most likely a standalone simulator: sign with its
        # published demo key pair, and say so.
        simulator = SimulatorSettings()
        logger.warning(
            "GATEWAY_MPS_ENDPOINT is set but no ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET: signing with "
            "the simulator's demo key pair (%s).",
            simulator.access_key_id,
        )
        auth = RpcSignatureV1(
            simulator.access_key_id, simulator.access_key_secret.get_secret_value()
        )
    limits = httpx.Limits(
        max_connections=settings.upstream_concurrency,
        max_keepalive_connections=settings.upstream_concurrency,
    )
    return httpx.AsyncClient(
        base_url=settings.upstream_url,
        auth=auth,
        timeout=timeout,
        limits=limits,
        transport=transport,
        headers={"user-agent": "mps-gateway/0.1"},
    )
