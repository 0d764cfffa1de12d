"""graphql-http's audit of the GraphQL-over-HTTP specification (`auditServer`, every MUST,
SHOULD and MAY it checks) against a running gateway: every audit must be "ok"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import StartGateway
from tests.support.node import run_node

pytestmark = pytest.mark.slow

#: How many audits graphql-http 1.23.1 (pinned in tests/js) runs: fewer would mean some did not.
AUDITS = 61


def test_every_graphql_over_http_audit_passes(start_gateway: StartGateway) -> None:
    with start_gateway() as gateway:
        results: list[dict[str, Any]] = run_node("audit.mjs", [gateway.graphql_url])  # type: ignore[assignment]

    failures = [result for result in results if result["status"] != "ok"]
    ok = len(results) - len(failures)
    print(f"graphql-http auditServer: {ok} ok of {len(results)}")
    for failure in failures:
        print(json.dumps(failure, indent=2))
    assert len(results) == AUDITS
    assert failures == []
