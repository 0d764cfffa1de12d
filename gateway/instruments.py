"""`Instruments`: the observers every layer is given, made of the process's metrics, its tracer
(when it traces) and its rate-limited warnings.

Each layer declares the hook it calls (`ApiObserver`, `FetchObserver`, `Lookups`,
`BudgetObserver`, `CallObserver`) and never imports this module: the app wires them here. The
label values of every metric are bound when `Instruments` is made, so each series exists, at
zero, from the start, and an event costs one increment of a bound child (no label lookup on
the hot path). Spans of a wait or a call are made when it ends, with its real start and end,
in the context of the task that waited or called.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Final

from prometheus_client import Gauge

from gateway import errors
from gateway.api.observer import PERSISTED_OUTCOMES, ApiObserver
from gateway.budget.protocol import Budget, BudgetObserver
from gateway.jobs.cache import Lookups
from gateway.jobs.fetcher import FetchObserver
from gateway.mps.client import NOT_FOUND_CODES, QUERY_ACTION, SUBMIT_ACTION, CallObserver
from gateway.observe.logs import LogLimiter
from gateway.observe.metrics import FAILOVER_PARTS, Metrics
from gateway.shared.switch import BackendSwitch

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from gateway.observe.otel import Tracing

__all__ = ["Instruments"]

logger = logging.getLogger(__name__)

OPERATION_TYPES: Final = ("query", "mutation", "subscription", "none")
OPERATION_OUTCOMES: Final = ("ok", "client_error", "error")
TRANSPORTS: Final = ("websocket", "sse", "http")
ACTIONS: Final = (QUERY_ACTION, SUBMIT_ACTION)
#: `mpsgw_upstream_calls_total`'s outcomes: ok, not_found, or an upstream error's code
#: without its UPSTREAM_ prefix.
CALL_OUTCOMES: Final = (
    "ok",
    "not_found",
    "throttled",
    "unavailable",
    "timeout",
    "auth_failed",
    "rejected",
    "bad_response",
)
REFUSALS: Final = ("exhausted", "shutting_down")
#: Why a request was shed before it ran (`gateway.admission`).
SHED_REASONS: Final = ("deadline", "overloaded")
#: Upstream outcomes an operator must hear of: the gateway cannot work until someone acts.
WARNED_OUTCOMES: Final = {
    "auth_failed": "check the access key, its permissions and this host's clock",
    "bad_response": "the upstream answered something the gateway cannot read",
}


class Instruments:
    """The observers of one app (see the module docstring). `warnings` rate-limits the
    warnings of upstream failures (one a minute per kind, by default)."""

    def __init__(
        self,
        metrics: Metrics,
        tracing: Tracing | None = None,
        *,
        warnings: LogLimiter | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        tracer = None if tracing is None else tracing.tracer
        self.api: ApiObserver = _ApiInstruments(metrics)
        self.fetch: FetchObserver = _FetchInstruments(metrics, tracer)
        self.upstream: CallObserver = _UpstreamInstruments(
            metrics, tracer, warnings or LogLimiter()
        )
        self._tracer = tracer
        self._shed = {reason: metrics.requests_shed.labels(reason) for reason in SHED_REASONS}
        self._shed_operations = metrics.graphql_requests.labels("none", "error")
        self._failover = {part: metrics.failover_active.labels(part) for part in FAILOVER_PARTS}
        for gauge in self._failover.values():
            gauge.set(0)

    def shed(self, reason: str) -> None:
        """A request was refused before it ran, for `reason` (SHED_REASONS): an operation that
        failed for the gateway's sake."""
        self._shed[reason].inc()
        self._shed_operations.inc()

    def budget(self, action: str) -> BudgetObserver:
        """The observer of the budget of `action`."""
        return _BudgetInstruments(self.metrics, action, self._tracer)

    def cache(self, tier: str) -> Lookups:
        """Where the cache tier `tier` (memory, redis) counts its lookups."""
        lookups = self.metrics.cache_lookups
        return Lookups(hits=lookups.labels(tier, "hit"), misses=lookups.labels(tier, "miss"))

    def answers(self, tier: str) -> Lookups:
        """Where the kept answers' tier `tier` (memory, redis) counts its lookups."""
        lookups = self.metrics.answer_lookups
        return Lookups(hits=lookups.labels(tier, "hit"), misses=lookups.labels(tier, "miss"))

    def watch_budget(self, action: str, budget: Budget) -> None:
        """Sample the limits and the queue of `budget` (of `action`) into their gauges."""
        metrics = self.metrics
        metrics.budget_limit.labels(action).set(budget.limit)
        effective = metrics.budget_effective_limit.labels(action)
        waiting = metrics.budget_waiting.labels(action)

        def sample() -> None:
            status = budget.status()
            effective.set(status.effective_limit)
            waiting.set(status.waiting)

        sample()
        metrics.add_sampler(sample)

    def watch_switch(self, switch: BackendSwitch) -> None:
        """Follow `switch` in `mpsgw_failover_active` (every part fails over with it)."""

        def set_all(value: int) -> None:
            for gauge in self._failover.values():
                gauge.set(value)

        switch.on_switch(lambda: set_all(1), lambda: set_all(0))


class _ApiInstruments:
    __slots__ = ("_durations", "_persisted", "_requests", "_subscriptions")

    def __init__(self, metrics: Metrics) -> None:
        self._requests = {
            (kind, outcome): metrics.graphql_requests.labels(kind, outcome)
            for kind in OPERATION_TYPES
            for outcome in OPERATION_OUTCOMES
        }
        self._durations = {
            kind: metrics.graphql_duration.labels(kind)
            for kind in OPERATION_TYPES
            if kind != "subscription"
        }
        self._subscriptions = {
            transport: metrics.subscriptions_active.labels(transport) for transport in TRANSPORTS
        }
        self._persisted = {
            outcome: metrics.persisted_queries.labels(outcome) for outcome in PERSISTED_OUTCOMES
        }

    def operation(self, operation_type: str, outcome: str, seconds: float | None) -> None:
        self._requests[operation_type, outcome].inc()
        if seconds is not None:
            self._durations[operation_type].observe(seconds)

    def persisted_query(self, outcome: str) -> None:
        self._persisted[outcome].inc()

    def subscription(self, transport: str) -> AbstractContextManager[object]:
        return _Active(self._subscriptions[transport])


class _Active:
    """A gauge one higher while the block runs."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._gauge.dec()


class _FetchInstruments:
    __slots__ = ("_claim_waits", "_tracer")

    def __init__(self, metrics: Metrics, tracer: Tracer | None) -> None:
        self._claim_waits = metrics.fetch_claim_waits
        self._tracer = tracer

    def batch(self, ids: int) -> AbstractContextManager[object]:
        if self._tracer is None:
            return nullcontext()
        return self._tracer.start_as_current_span("jobs batch", attributes={"gateway.ids": ids})

    def claim_waited(self) -> None:
        self._claim_waits.inc()


class _BudgetInstruments:
    __slots__ = ("_action", "_refusals", "_throttles", "_tracer", "_wait")

    def __init__(self, metrics: Metrics, action: str, tracer: Tracer | None) -> None:
        self._action = action
        self._wait = metrics.budget_wait.labels(action)
        self._refusals = {
            reason: metrics.budget_refusals.labels(action, reason) for reason in REFUSALS
        }
        self._throttles = metrics.budget_throttles.labels(action)
        self._tracer = tracer

    def granted(self, waited: float) -> None:
        self._wait.observe(waited)
        if self._tracer is not None:
            self._span(waited, "granted")

    def refused(self, reason: str, waited: float) -> None:
        self._refusals[reason].inc()
        if self._tracer is not None:
            self._span(waited, reason, error=f"No budget slot: {reason}")

    def throttled(self) -> None:
        self._throttles.inc()

    def pump_context(self) -> contextvars.Context:
        context = contextvars.Context()
        if self._tracer is not None:
            # Its Redis round trips serve many requests at once, and each request's wait has
            # a span of its own: traced, they would be a trace of their own each, many a second.
            context.run(_suppress_instrumentation)
        return context

    def _span(self, waited: float, outcome: str, *, error: str | None = None) -> None:
        assert self._tracer is not None
        attributes = {"gateway.budget.action": self._action, "gateway.budget.outcome": outcome}
        _past_span(self._tracer, "budget wait", waited, attributes, error=error)


class _UpstreamInstruments:
    __slots__ = ("_calls", "_durations", "_tracer", "_warnings")

    def __init__(self, metrics: Metrics, tracer: Tracer | None, warnings: LogLimiter) -> None:
        self._calls = {
            (action, outcome): metrics.upstream_calls.labels(action, outcome)
            for action in ACTIONS
            for outcome in CALL_OUTCOMES
        }
        self._durations = {action: metrics.upstream_duration.labels(action) for action in ACTIONS}
        self._tracer = tracer
        self._warnings = warnings

    def called(
        self,
        action: str,
        *,
        seconds: float,
        error: errors.UpstreamError | None,
        request_id: str | None,
    ) -> None:
        outcome = _call_outcome(error)
        self._calls[action, outcome].inc()
        if seconds > 0:
            self._durations[action].observe(seconds)
        if self._tracer is not None:
            attributes: dict[str, str] = {
                "rpc.system": "aliyun_rpc",
                "rpc.service": "mts",
                "rpc.method": action,
                "gateway.upstream.outcome": outcome,
            }
            if request_id is not None:
                attributes["mps.request_id"] = request_id
            failed = None if error is None or outcome == "not_found" else error.code
            _past_span(
                self._tracer, f"MPS {action}", seconds, attributes, error=failed, client=True
            )
        advice = WARNED_OUTCOMES.get(outcome)
        if advice is not None and error is not None:
            count = self._warnings.happened(outcome)
            if count is not None:
                logger.warning(
                    "%s RequestId %s; %s (%d such answers since the last such warning, which "
                    "comes at most once a minute)",
                    error.message,
                    request_id or "unknown",
                    advice,
                    count,
                )


def _call_outcome(error: errors.UpstreamError | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, errors.UpstreamRejected) and error.upstream_code in NOT_FOUND_CODES:
        return "not_found"
    outcome = error.code.removeprefix("UPSTREAM_").lower()
    return outcome if outcome in CALL_OUTCOMES else "unavailable"


def _suppress_instrumentation() -> None:
    """In the current context, turn the instrumented libraries' spans off (the Redis ones)."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

    attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


def _past_span(
    tracer: Tracer,
    name: str,
    seconds: float,
    attributes: Mapping[str, str],
    *,
    error: str | None = None,
    client: bool = False,
) -> None:
    """A span that ended now after `seconds`, a child of the current span."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    end = time.time_ns()
    span = tracer.start_span(
        name,
        kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
        attributes=dict(attributes),
        start_time=end - int(seconds * 1e9),
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end)
