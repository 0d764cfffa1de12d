"""The upstream operations the gateway budgets, each with a limit of its own (MPS limits calls
per account and per action: SubmitIProductionJob does not share QueryIProductionJob's)."""

from __future__ import annotations

from typing import Final

from gateway.settings import GatewaySettings

__all__ = ["OPERATIONS", "QUERY_JOB", "SUBMIT_JOB", "limit_of"]

QUERY_JOB: Final = "QueryIProductionJob"
SUBMIT_JOB: Final = "SubmitIProductionJob"
OPERATIONS: Final = (QUERY_JOB, SUBMIT_JOB)


def limit_of(settings: GatewaySettings, operation: str) -> int:
    """The account's calls per second of `operation`, as configured."""
    if operation == QUERY_JOB:
        return settings.upstream_qps
    if operation == SUBMIT_JOB:
        return settings.submit_qps
    raise ValueError(f"Expected one of {', '.join(OPERATIONS)}, received {operation!r}.")
