"""Apollo Client's persisted query link (the npm package, pinned) against a real gateway: it
asks by hash over GET, registers on `PERSISTED_QUERY_NOT_FOUND`, then asks by hash again."""

from __future__ import annotations

import pytest

from tests.api.conftest import StartGateway
from tests.servers import SimulatorServer
from tests.support.node import run_node


@pytest.mark.slow
def test_apollo_clients_persisted_query_link_registers_then_asks_by_hash(
    start_gateway: StartGateway, simulator: SimulatorServer
) -> None:
    job_id = simulator.demo_ids()[0]
    with start_gateway() as gateway:
        seen = run_node("persisted.mjs", [gateway.graphql_url, job_id])
    job = {"__typename": "Job", "id": job_id, "state": "SUCCESS"}
    assert seen == {
        "answers": [{"job": job}, {"job": job}],
        "sent": [
            # Unknown hash: PersistedQueryNotFound (HTTP 200), and the link sends the text.
            {"method": "GET", "query": False, "hash": True, "status": 200},
            {"method": "POST", "query": True, "hash": True, "status": 200},
            # Registered: the hash alone, over GET, which a CDN may cache.
            {"method": "GET", "query": False, "hash": True, "status": 200},
        ],
    }
