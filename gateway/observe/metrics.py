"""`Metrics`: the gateway's Prometheus collectors, and their exposition in the text format.

One `Metrics` per app, on a registry of its own (no import-time global). prometheus-client
picks its mode when it is first imported: with `PROMETHEUS_MULTIPROC_DIR` set (an empty
directory, emptied before the server starts), every process of `uvicorn --workers N` writes its
values to files there and whichever process answers /metrics sums them all (counters and
histograms add up; gauges say how they combine, below), so a scrape is right whichever worker
takes it. Process metrics are then this process's, labelled with its `pid`.

Guarantees: every label value is one of a fixed set (no job ids, no client text); the series
of those sets are exposed from the start, at zero (`gateway.observe.instruments` binds them),
so that a rate over them is never empty for want of a first event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector

__all__ = ["Metrics", "multiprocess_mode"]

logger = logging.getLogger(__name__)

#: Seconds: from a cached answer (about a millisecond) to a request's whole deadline.
REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Seconds: an upstream round trip, up to the read timeout.
UPSTREAM_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Seconds: from a free slot (no wait) to a whole deadline of waiting.
WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: The parts that fail over together when Redis does not answer (`mpsgw_failover_active`).
FAILOVER_PARTS: Final = ("budget", "cache", "claims")


def multiprocess_mode() -> bool:
    """Whether prometheus-client writes values to PROMETHEUS_MULTIPROC_DIR (decided when it was
    first imported, from the environment then)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class Metrics:
    """The collectors (attributes named after what they count), and `registry`, what /metrics
    exposes. `sample()` runs the samplers added with `add_sampler`: gauges read from state
    (the budget's effective limit...) are set then, before a scrape and every few seconds."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        #: What /metrics renders.
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the collectors write to files and are read back from them all;
        # registered here too, this process's values would be exposed twice.
        own = None if self.multiprocess else self.registry
        self._samplers: list[Callable[[], None]] = []

        self.graphql_requests = Counter(
            "mpsgw_graphql_requests_total",
            "GraphQL operations answered, by type (query, mutation, subscription; none for an "
            "HTTP request refused before one could be read) and outcome (ok; client_error when "
            "every error was the request's fault; error otherwise).",
            ["operation_type", "outcome"],
            registry=own,
        )
        self.graphql_duration = Histogram(
            "mpsgw_graphql_request_duration_seconds",
            "Seconds from the start of a GraphQL operation to its answer (subscriptions, "
            "which last as long as the client listens, are not timed).",
            ["operation_type"],
            buckets=REQUEST_BUCKETS,
            registry=own,
        )
        self.upstream_calls = Counter(
            "mpsgw_upstream_calls_total",
            "Calls to the MPS API, by action and outcome (ok, not_found, throttled, "
            "unavailable, timeout, auth_failed, rejected, bad_response).",
            ["action", "outcome"],
            registry=own,
        )
        self.upstream_duration = Histogram(
            "mpsgw_upstream_call_duration_seconds",
            "Seconds of an upstream call's round trip (what its budget slot holds).",
            ["action"],
            buckets=UPSTREAM_BUCKETS,
            registry=own,
        )
        self.budget_wait = Histogram(
            "mpsgw_budget_wait_seconds",
            "Seconds an upstream call waited for its budget slot (granted ones).",
            ["action"],
            buckets=WAIT_BUCKETS,
            registry=own,
        )
        self.budget_refusals = Counter(
            "mpsgw_budget_refusals_total",
            "Calls refused a budget slot: exhausted (none before the deadline: "
            "BUDGET_EXHAUSTED) or shutting_down.",
            ["action", "reason"],
            registry=own,
        )
        self.budget_throttles = Counter(
            "mpsgw_budget_throttles_total",
            "Calls the upstream throttled although the budget held (another user of the "
            "account): each may lower the effective limit.",
            ["action"],
            registry=own,
        )
        self.budget_limit = Gauge(
            "mpsgw_budget_limit",
            "Calls per window the budget allows, as configured (GATEWAY_UPSTREAM_QPS).",
            ["action"],
            registry=own,
            multiprocess_mode="livemax",
        )
        self.budget_effective_limit = Gauge(
            "mpsgw_budget_effective_limit",
            "Calls per window the budget allows now: the limit, lower for a while after a "
            "throttle, or this process's share while Redis does not answer (the lowest of "
            "the processes).",
            ["action"],
            registry=own,
            multiprocess_mode="livemin",
        )
        self.budget_waiting = Gauge(
            "mpsgw_budget_waiting",
            "Calls queued for a budget slot (all processes).",
            ["action"],
            registry=own,
            multiprocess_mode="livesum",
        )
        self.requests_shed = Counter(
            "mpsgw_requests_shed_total",
            "GraphQL requests over HTTP refused before they ran, by reason: deadline (it passed "
            "before the request could start: DEADLINE_EXCEEDED) or overloaded "
            "(GATEWAY_MAX_CONCURRENT_REQUESTS running: OVERLOADED).",
            ["reason"],
            registry=own,
        )
        self.persisted_queries = Counter(
            "mpsgw_persisted_queries_total",
            "Requests naming a persisted query by hash, or sending text with its hash, by "
            "outcome: hit, miss (PERSISTED_QUERY_NOT_FOUND), registered, "
            "not_registered_rate_limited and not_registered_bytes_limited (over this process's "
            "registration limits), not_registered_invalid (too large, or no parse), refused "
            "(any other PERSISTED_QUERY_* error).",
            ["outcome"],
            registry=own,
        )
        self.cache_lookups = Counter(
            "mpsgw_cache_lookups_total",
            "Snapshot lookups by tier (memory: this process; redis: shared) and result; a "
            "memory miss goes on to redis when there is one.",
            ["tier", "result"],
            registry=own,
        )
        self.answer_lookups = Counter(
            "mpsgw_answer_lookups_total",
            "Lookups of kept answers (queries of finished jobs, answered as first sent) by tier "
            "(memory: this process; redis: shared) and result; a memory miss goes on to redis "
            "when there is one.",
            ["tier", "result"],
            registry=own,
        )
        self.answer_bytes = Gauge(
            "mpsgw_answer_cache_bytes",
            "Bytes the kept answers hold in memory (bodies and a fixed overhead each; the sum "
            "of the processes).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.fetch_claim_waits = Counter(
            "mpsgw_fetch_claim_waits_total",
            "Fetches that found their job claimed by another process and waited for its answer.",
            registry=own,
        )
        self.failover_active = Gauge(
            "mpsgw_failover_active",
            "1 while a part shared through Redis (budget, cache, claims) is served by this "
            "process alone because Redis does not answer (the highest of the processes).",
            ["part"],
            registry=own,
            multiprocess_mode="livemax",
        )
        self.subscriptions_active = Gauge(
            "mpsgw_subscriptions_active",
            "Subscriptions being served, by transport (websocket, sse, http).",
            ["transport"],
            registry=own,
            multiprocess_mode="livesum",
        )
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            self.add_sampler(_ProcessRelay().sample)
        else:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)

    def add_sampler(self, sampler: Callable[[], None]) -> None:
        """Run `sampler` at each `sample()`."""
        self._samplers.append(sampler)

    def sample(self) -> None:
        """Set the sampled gauges from what their samplers read now. A failing sampler is
        logged and skipped: metrics never break what they watch."""
        for sampler in self._samplers:
            try:
                sampler()
            except Exception:
                logger.exception("A metrics sampler failed")

    def names(self) -> Sequence[str]:
        """The names of the metric families this process exposes (for tests and tools)."""
        return sorted({family.name for family in self.registry.collect()})

    def close(self) -> None:
        """This process stops: in multiprocess mode its live gauges leave the sums (their
        files are removed); counters and histograms stay, as Prometheus expects."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _ProcessRelay:
    """In multiprocess mode, this process's CPU, memory and file descriptors as gauges with
    its `pid`: prometheus-client's process collector reads them, and its values, which it
    cannot write to the shared files itself, are copied into gauges that can."""

    def __init__(self) -> None:
        self._reader = ProcessCollector(registry=None)
        self._gauges: dict[str, Gauge] = {}

    def sample(self) -> None:
        for family in self._reader.collect():
            for sample in family.samples:
                gauge = self._gauges.get(sample.name)
                if gauge is None:
                    gauge = self._gauges[sample.name] = Gauge(
                        sample.name,
                        family.documentation,
                        registry=None,
                        multiprocess_mode="liveall",
                    )
                gauge.set(sample.value)
