"""`Services`: the parts every request of one process shares, from start-up to shutdown.

Without `redis_url` the budget, the snapshot cache and the automatic persisted queries live in
this process. With it, they and the fetch claims are shared by every process using that Redis
and prefix, and all four follow one `BackendSwitch`: when Redis does not answer, this process
serves on its share of the account's limit (`upstream_qps // expected_replicas`), its own cache
and its own persisted queries, fetching without claims, until Redis answers again (one warning
each way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx
import redis.asyncio
import redis.exceptions
from starlette.applications import Starlette

from gateway.answers.http import KeptAnswers
from gateway.answers.shared import SharedAnswers
from gateway.budget import QUERY_JOB, SUBMIT_JOB, Budget, LocalBudget, shared_budget
from gateway.budget import protocol as budget_protocol
from gateway.budget.protocol import BudgetObserver
from gateway.credentials import account_credentials
from gateway.instruments import Instruments
from gateway.jobs import fetcher as jobs_fetcher
from gateway.jobs.cache import UNCOUNTED, LocalSnapshotCache, Lookups, SnapshotCache
from gateway.jobs.claims import RedisFetchClaims
from gateway.jobs.failover import FailoverCache, FailoverClaims
from gateway.jobs.fetcher import FetchObserver, JobFetcher
from gateway.jobs.redis_cache import RedisSnapshotCache
from gateway.jobs.retry import RetryPolicy
from gateway.mps import client as mps_client
from gateway.mps.client import CallObserver, MpsClient
from gateway.mps.pool import connection_stats
from gateway.oss import OssPresigner
from gateway.persisted import FailoverDocumentStore, LocalDocumentStore, RedisDocumentStore
from gateway.settings import GatewaySettings
from gateway.shared.backend import RedisClient, open_redis
from gateway.shared.switch import BackendSwitch
from gateway.submit.idempotency import (
    FailoverIdempotencyStore,
    IdempotencyStore,
    LocalIdempotencyStore,
    RedisIdempotencyStore,
)
from gateway.submit.submitter import JobSubmitter
from gateway.upstream import open_upstream_http

__all__ = ["Services"]


@dataclass(slots=True)
class Services:
    """See the module docstring. `build` makes them; `aclose` ends them, in an order that lets
    the releases of shared state finish before Redis closes."""

    http: httpx.AsyncClient
    client: MpsClient
    budget: Budget
    cache: SnapshotCache
    fetcher: JobFetcher
    #: SubmitIProductionJob's own budget (the account's limit of that action).
    submit_budget: Budget
    #: submitJob: one submission per idempotency key, recorded with `store`.
    submitter: JobSubmitter
    #: Signs OSS download URLs with the key the upstream calls use (no I/O).
    presigner: OssPresigner
    #: Automatic persisted queries: this process's memory, behind Redis when there is one.
    documents: LocalDocumentStore | FailoverDocumentStore
    #: The Redis client behind the shared parts; None when there is none.
    redis: RedisClient | None = None
    #: Whether Redis serves (shared by the budget, the cache and the claims); None without it.
    switch: BackendSwitch | None = None
    #: Kept answers shared by the fleet (`gateway.answers`); None without Redis.
    answers: SharedAnswers | None = None
    #: The app's kept answers (it serves them before any service is reached), reported with
    #: the rest; None when it keeps none.
    kept: KeptAnswers | None = None

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        simulator: Starlette | None = None,
        instruments: Instruments | None = None,
    ) -> Services:
        """`simulator`: the embedded simulator to call, when the gateway runs on one (the app
        serves its admin routes too); a new one when it is not given. `instruments`: the
        observers the parts are given (None: nobody watches)."""
        # One credential choice for both signers: MPS calls and OSS download URLs.
        credentials = account_credentials(settings)
        http = open_upstream_http(settings, credentials, simulator=simulator)
        watch = _Observers(instruments)
        client = MpsClient(http, region=settings.region_id, observer=watch.upstream)
        shared: RedisClient | None = None
        switch: BackendSwitch | None = None
        budget: Budget
        submit_budget: Budget
        cache: SnapshotCache
        store: IdempotencyStore
        claims: FailoverClaims | None = None
        answers: SharedAnswers | None = None
        local_store = LocalIdempotencyStore(settings.idempotency_ttl)
        if settings.redis_url is None:
            budget = LocalBudget.from_settings(settings, observer=watch.budget)
            submit_budget = LocalBudget.from_settings(
                settings, observer=watch.submit_budget, operation=SUBMIT_JOB
            )
            cache = LocalSnapshotCache.from_settings(settings, lookups=watch.memory)
            store = local_store
        else:
            shared = open_redis(
                settings.redis_url.get_secret_value(),
                timeout=settings.redis_timeout,
                cluster=settings.redis_cluster,
            )
            if instruments is not None and instruments.tracing is not None:
                instruments.tracing.instrument_redis(shared)
            switch = BackendSwitch(
                local_mode=(
                    f"serving on a local budget of {settings.fallback_qps} calls/s and this "
                    "process's own cache, without fleet-wide fetch claims, until it answers"
                ),
                shared_mode=(
                    f"serving on the shared budget of {settings.upstream_qps} calls/s, the "
                    "shared cache and fleet-wide fetch claims"
                ),
            )
            budget = shared_budget(settings, shared, switch, observer=watch.budget)
            submit_budget = shared_budget(
                settings, shared, switch, observer=watch.submit_budget, operation=SUBMIT_JOB
            )
            store = FailoverIdempotencyStore(
                RedisIdempotencyStore(
                    shared, ttl=settings.idempotency_ttl, prefix=settings.redis_prefix
                ),
                local_store,
                switch,
            )
            shared_cache = RedisSnapshotCache.from_settings(
                shared, settings, memory=watch.memory, shared=watch.redis
            )
            cache = FailoverCache(
                shared_cache,
                LocalSnapshotCache.from_settings(settings, lookups=watch.memory),
                switch,
            )
            claims = FailoverClaims(
                RedisFetchClaims.from_settings(shared, shared_cache, settings), switch
            )
            answers = SharedAnswers(shared, switch, prefix=settings.redis_prefix)
        memory = LocalDocumentStore(max_bytes=settings.apq_memory_bytes, ttl=settings.apq_ttl)
        documents: LocalDocumentStore | FailoverDocumentStore = memory
        if shared is not None and switch is not None:
            documents = FailoverDocumentStore(
                RedisDocumentStore(shared, prefix=settings.redis_prefix, ttl=settings.apq_ttl),
                memory,
                switch,
            )
        fetcher = JobFetcher(
            client,
            budget,
            cache,
            claims=claims,
            retry=RetryPolicy.from_settings(settings),
            observer=watch.fetch,
        )
        submitter = JobSubmitter(
            client,
            submit_budget,
            fetcher,
            store,
            region=settings.region_id,
            idempotency_ttl=settings.idempotency_ttl,
            call_timeout=settings.connect_timeout + settings.read_timeout,
            retry=RetryPolicy.from_settings(settings),
        )
        if instruments is not None:
            instruments.watch_budget(QUERY_JOB, budget)
            instruments.watch_budget(SUBMIT_JOB, submit_budget)
            if switch is not None:
                instruments.watch_switch(switch)
        return cls(
            http=http,
            client=client,
            budget=budget,
            cache=cache,
            fetcher=fetcher,
            submit_budget=submit_budget,
            submitter=submitter,
            presigner=OssPresigner(credentials),
            documents=documents,
            redis=shared,
            switch=switch,
            answers=answers,
        )

    def begin_shutdown(self) -> None:
        """The process is told to stop: requests waiting for a budget slot are answered at once
        (`SHUTTING_DOWN`, retryable) instead of waiting to their deadline; calls under way go on."""
        self.budget.close()
        self.submit_budget.close()

    async def aclose(self) -> None:
        self.begin_shutdown()
        try:
            # Submissions under way first: their outcome must be recorded.
            await self.submitter.aclose()
            # The fetcher next: stopping its fetches releases their slots and claims.
            await self.fetcher.aclose()
            # Then the budgets: the releases under way reach Redis before it closes.
            await self.budget.aclose()
            await self.submit_budget.aclose()
            await self.http.aclose()
            if self.answers is not None:
                await self.answers.aclose()
        finally:
            if self.redis is not None:
                await self.redis.aclose()

    async def probe_redis(self) -> bool:
        """Whether Redis answers a PING now (within the Redis timeout); False without Redis.

        An answer also serves as the switch's probe when one is due: a process that makes no
        calls (idle behind a load balancer) has nothing else to notice that Redis is back with.
        """
        if self.redis is None:
            return False
        try:
            answered = bool(await self.redis.ping())
        except redis.exceptions.RedisError:
            return False
        if answered and self.switch is not None:
            self.switch.answered()
        return answered

    @property
    def degraded(self) -> bool:
        """Whether the shared parts are served locally because Redis did not answer."""
        return self.switch is not None and self.switch.degraded

    def report(self) -> dict[str, object]:
        """What /readyz tells of the shared parts and the fetcher (snake_case keys)."""
        shared = self.switch is not None and not self.switch.degraded
        return {
            "redis": {
                "configured": self.redis is not None,
                "failover": None if self.switch is None else asdict(self.switch.status()),
            },
            "budget": {"shared": shared, **asdict(self.budget.status())},
            "submit_budget": {"shared": shared, **asdict(self.submit_budget.status())},
            "cache": {"shared": shared},
            "claims": {"shared": shared},
            "fetcher": asdict(self.fetcher.stats()),
            **(
                {}
                if (connections := connection_stats(self.http)) is None
                else {"upstream_connections": asdict(connections)}
            ),
            **({} if self.kept is None else {"answers": self.kept.report()}),
        }


class _Observers:
    """The observers `Services.build` hands out: the instruments', or nobody's."""

    def __init__(self, instruments: Instruments | None) -> None:
        self.upstream: CallObserver = mps_client.NO_OBSERVER
        self.budget: BudgetObserver = budget_protocol.NO_OBSERVER
        self.submit_budget: BudgetObserver = budget_protocol.NO_OBSERVER
        self.fetch: FetchObserver = jobs_fetcher.NO_OBSERVER
        self.memory: Lookups = UNCOUNTED
        self.redis: Lookups = UNCOUNTED
        if instruments is not None:
            self.upstream = instruments.upstream
            self.budget = instruments.budget(QUERY_JOB)
            self.submit_budget = instruments.budget(SUBMIT_JOB)
            self.fetch = instruments.fetch
            self.memory = instruments.cache("memory")
            self.redis = instruments.cache("redis")
