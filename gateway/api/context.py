"""The per-request context every resolver receives."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway import model
from gateway.api.cacheability import Cacheability
from gateway.api.observer import NO_OBSERVER, ApiObserver
from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller, Scope
from gateway.callers.rate import TenantRateLimit
from gateway.errors import Forbidden
from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.loader import JobLoader
from gateway.oss import OssPresigner

if TYPE_CHECKING:
    # Only types here: views build GraphQL types, whose resolvers read this context.
    from gateway.api.views import JobViews
    from gateway.submit.submitter import JobSubmitter


#: Most of its time a request keeps for making and sending its answer once its waits end: waits
#: that ran to the very deadline would answer after it by the event loop's lag (p99 about 130 ms
#: at ten times the budget, docs/budget-benchmarks.md).
ANSWER_RESERVE = 0.1


def waits_end(deadline: float, timeout: float) -> float:
    """When a request's waits (upstream slots, calls, long lists) must end for its answer to be
    out by `deadline`: `ANSWER_RESERVE` before it, or a twentieth of a short `timeout`."""
    return deadline - min(ANSWER_RESERVE, timeout / 20)


@dataclass(slots=True)
class Context:
    """Made anew for each GraphQL request, and for each operation of a WebSocket connection
    (Strawberry makes one context per connection: `for_operation` gives each operation its own).
    Its loader's memo is private to that request, and `deadline` (on the fetcher's clock)
    bounds its waits for the upstream: `waits_end` of the request's own deadline."""

    #: The process-wide fetcher behind the loader; subscriptions poll it directly, since a
    #: loader's memo would answer every poll with the first snapshot.
    fetcher: JobFetcher
    deadline: float
    max_ids: int
    #: The process-wide views of snapshots (see `gateway.api.views`).
    views: JobViews
    #: Seconds a request (and each poll of a subscription) may wait for the upstream.
    timeout: float
    #: The most files one list of a result may hold (`GATEWAY_MAX_PAGE_SIZE`).
    max_page_size: int
    #: The process-wide signer of OSS download URLs (`signedUrl` fields); None signs nothing.
    presigner: OssPresigner | None = None
    #: Whether several operations share this context (a WebSocket connection's).
    per_connection: bool = False
    #: How the operation reaches the client: `websocket`, `sse` (an event stream) or `http`.
    transport: str = "http"
    #: Told of the subscriptions served (metrics).
    observer: ApiObserver = NO_OBSERVER
    #: Who is asking (authentication sets it; with `GATEWAY_AUTH=none`, an operator that may
    #: do everything).
    caller: Caller = UNAUTHENTICATED_OPERATOR
    #: The tenant owning jobs submitted outside the gateway (`GATEWAY_DEFAULT_TENANT`).
    default_tenant: str | None = None
    #: The per-tenant cap on operations (`GATEWAY_TENANT_QPS`); None: no cap.
    rate_limit: TenantRateLimit | None = None
    #: A WebSocket's `connection_init` payload (Strawberry sets it), read for credentials.
    connection_params: dict[str, object] | None = None
    #: The process-wide submitter of submitJob; None where nothing may be submitted.
    submitter: JobSubmitter | None = None
    #: The request's `Idempotency-Key` header, as sent (submitJob checks it).
    idempotency_key: str | None = None
    #: The MPS region the gateway serves: submitted OSS URLs must be in it.
    region: str = "cn-hangzhou"
    #: Told what the operation touched, when its answer may be kept (`gateway.answers`); None
    #: when nobody would keep it (a WebSocket operation, or a request with no key).
    cacheability: Cacheability | None = None
    _jobs: JobLoader | None = field(default=None, repr=False)

    def for_operation(self) -> Context:
        """The context of one operation: its own deadline from now and its own loader, so
        that a long-lived connection neither times out its later queries nor serves them from
        its first answers."""
        return dataclasses.replace(
            self,
            deadline=waits_end(time.monotonic() + self.timeout, self.timeout),
            per_connection=False,
            cacheability=None,
            _jobs=None,
        )

    def moves(self, reason: str) -> None:
        """The answer depends on something that moves (a running job, the clock): it is not
        to be kept."""
        if self.cacheability is not None:
            self.cacheability.forbid(reason)

    def touched(self, job: object) -> None:
        """The answer shows `job` (a snapshot, None for no such job, an error): it may be kept
        when that is a finished job, or, until the snapshot expires, a running one."""
        if self.cacheability is None:
            return
        if job is None:
            self.cacheability.forbid("a job that does not exist (yet)")
        elif not isinstance(job, model.Job):
            self.cacheability.forbid("a job that failed to load")
        elif not job.state.is_terminal:
            self.cacheability.read_running(job, self.fetcher.versions)

    @property
    def jobs(self) -> JobLoader:
        """The request's loader, made on first use: a request that needs none (a cached
        finished job, introspection) does not pay for one."""
        if self._jobs is None:
            self._jobs = JobLoader(self.fetcher, self.deadline, requester=self.requester)
        return self._jobs

    @property
    def requester(self) -> object:
        """This request's key in the budget's round-robin: its caller's tenant (so that one
        tenant sending many ids or requests cannot starve the others), or, with no
        authentication, a key of its own."""
        key = self.caller.fairness_key
        return object() if key is None else key

    def require_read(self) -> None:
        """FORBIDDEN unless the caller may read jobs at all (checked before any upstream
        call)."""
        if not self.caller.may_read:
            raise Forbidden(Scope.READ.value, "read jobs")

    def visible(self, job: model.Job) -> bool:
        """Whether the caller may see `job`: a job it may not see is answered as a missing
        one."""
        owner = job.owner if job.owner is not None else self.default_tenant
        return self.caller.sees(owner)
