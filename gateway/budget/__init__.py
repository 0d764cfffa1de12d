"""The upstream call budget: at most `limit` calls in any rolling window, shared fairly.

`Budget` is what the fetcher uses. Every budget is a `SlotBudget` (fair, deadline-bound
waiting) over a ledger that counts the slots: `LocalLedger` (one process), `RedisLedger` (a
fleet) or `FailoverLedger` (Redis while it answers, a local share while it does not). The
completion-time rule they keep, and why, is in `docs/architecture.md`.
"""

from __future__ import annotations

from gateway.budget.actions import OPERATIONS, QUERY_JOB, SUBMIT_JOB, limit_of
from gateway.budget.failover import FailoverLedger, FailoverSlot
from gateway.budget.local import LocalBudget, LocalLedger
from gateway.budget.protocol import NO_OBSERVER, Budget, BudgetObserver, BudgetStatus
from gateway.budget.redis_ledger import RedisBudget, RedisLedger
from gateway.budget.waiting import SlotBudget
from gateway.settings import GatewaySettings
from gateway.shared.backend import RedisClient
from gateway.shared.switch import BackendSwitch

__all__ = [
    "NO_OBSERVER",
    "OPERATIONS",
    "QUERY_JOB",
    "SUBMIT_JOB",
    "Budget",
    "BudgetObserver",
    "BudgetStatus",
    "FailoverLedger",
    "LocalBudget",
    "LocalLedger",
    "RedisBudget",
    "RedisLedger",
    "SlotBudget",
    "limit_of",
    "shared_budget",
]


def shared_budget(
    settings: GatewaySettings,
    redis: RedisClient,
    switch: BackendSwitch,
    *,
    observer: BudgetObserver = NO_OBSERVER,
    operation: str = QUERY_JOB,
) -> SlotBudget[FailoverSlot]:
    """The fleet's budget of `operation` in Redis (keys `{prefix}:budget:{<operation>}:*`);
    while Redis does not answer (as `switch` says), this process's share of its limit, so that
    `expected_replicas` processes that all lost Redis together stay under it."""
    window = settings.upstream_window
    ledger = FailoverLedger(
        RedisLedger.from_settings(redis, settings, operation),
        LocalLedger(settings.fallback_share(limit_of(settings, operation)), window),
        switch,
        settle=window,
        # Every busy process is back within a probe interval, plus a probe that was failing
        # (up to the Redis timeout) when Redis came back; then its local slots expire.
        both_window=switch.probe_interval + settings.redis_timeout + window,
    )
    return SlotBudget(
        ledger, max_in_flight=settings.upstream_concurrency, observer=observer, paced=True
    )
