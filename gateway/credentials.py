"""The key pair the gateway acts with: one choice, shared by every part that signs.

The MPS client signs its RPC calls with it (`gateway.upstream`) and the OSS presigner signs
download URLs with it (`gateway.oss.presign`); both get the same `Credentials` from
`account_credentials`, so they can never disagree about whose key is in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AccessKey pair, with the STS token when the pair is temporary.

    The secret and the token are left out of `repr()`, so a stray log line or traceback cannot
    show them.
    """

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


def account_credentials(settings: GatewaySettings) -> Credentials:
    """The credentials the gateway signs with, for `settings`' upstream.

    - Embedded simulator (no credentials, no endpoint): the simulator's key pair, which it accepts.
    - Cloud credentials set (`ALIBABA_CLOUD_ACCESS_KEY_ID`/`SECRET`, optional `SECURITY_TOKEN`):
      those, whatever the endpoint.
    - An endpoint without credentials: most likely a standalone simulator, so its published demo
      key pair, with a warning (the id only, never the secret).
    """
    if settings.access_key_id and settings.access_key_secret:
        token = settings.security_token.get_secret_value() if settings.security_token else None
        return Credentials(
            settings.access_key_id, settings.access_key_secret.get_secret_value(), token
        )
    simulator = SimulatorSettings()
    if settings.upstream_kind is UpstreamKind.ENDPOINT:
        logger.warning(
            "GATEWAY_MPS_ENDPOINT is set but no ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET: signing with "
            "the simulator's demo key pair (%s).",
            simulator.access_key_id,
        )
    return Credentials(simulator.access_key_id, simulator.access_key_secret.get_secret_value())
