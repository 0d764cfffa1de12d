"""A fleet on 127.0.0.1: gateway processes (real `python -m gateway serve` subprocesses), one
simulator, and a Redis server of the test's own that it can kill and restart.

Every test here is in the xdist group "fleet" (`--dist loadgroup`): one worker runs them one
after the other, so two fleets (each of two or three gateway processes, and most under a load of
their own) never compete for the machine's two cores, while the other workers run the rest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from gateway.settings import SIMULATOR_DEMO_ACCESS_KEY_ID, SIMULATOR_DEMO_ACCESS_KEY_SECRET
from tests.servers import SimulatorServer
from tests.support.gateway import GatewayProcess
from tests.support.redis import CLIENT_TIMEOUT, RedisCluster, RedisServer


@contextmanager
def fleet(
    simulator: SimulatorServer, redis: RedisServer | RedisCluster, size: int, **settings: str
) -> Iterator[list[GatewayProcess]]:
    """`size` gateway processes sharing one budget and cache in `redis` (a cluster needs
    `GATEWAY_REDIS_CLUSTER="true"` among `settings`), each started (and answering) before the
    block begins, all stopped when it ends."""
    variables = {
        "GATEWAY_MPS_ENDPOINT": simulator.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": SIMULATOR_DEMO_ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SIMULATOR_DEMO_ACCESS_KEY_SECRET,
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        # A busy machine's slow answer is no outage; a killed Redis refuses at once all the same.
        "GATEWAY_REDIS_TIMEOUT": str(CLIENT_TIMEOUT),
        "GATEWAY_EXPECTED_REPLICAS": str(size),
        "GATEWAY_REQUEST_DEADLINE": "60",
        "GATEWAY_RETRY_BASE_DELAY": "0.05",
        "GATEWAY_LOG_LEVEL": "WARNING",
        **settings,
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(GatewayProcess(variables, name=f"gateway-{n}")) for n in range(size)
        ]
