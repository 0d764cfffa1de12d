"""Failover of the shared snapshot cache and fetch claims: `FailoverCache` and `FailoverClaims`.

A gateway that cannot reach Redis keeps serving: an outage costs sharing, never answers. Both
wrappers follow the process's one `BackendSwitch` (`gateway.shared.switch`), which the budget
follows too: while Redis answers, calls go to the shared side; while it does not, the cache
serves from this process's memory, and a fetch claims nothing and calls (each process then
coalesces alone, as its cache is its own anyway). A lease is released on the primary that
granted it; a release that fails counts like any other failure, and the claim expires on its
own.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.jobs.cache import CacheEntry, SnapshotCache
from gateway.jobs.claims import NO_LEASE, ClaimOutcome, FetchClaims, Held, Lease
from gateway.model import Job
from gateway.shared.backend import BackendUnavailable
from gateway.shared.switch import BackendSwitch, Route, SwitchStatus

__all__ = ["FailoverCache", "FailoverClaims"]


class FailoverCache:
    """A `SnapshotCache` served by `primary` (shared) and, while `switch` says the backend does
    not answer, by `fallback` (this process's memory)."""

    def __init__(
        self, primary: SnapshotCache, fallback: SnapshotCache, switch: BackendSwitch
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._switch = switch

    @property
    def primary(self) -> SnapshotCache:
        return self._primary

    @property
    def switch(self) -> BackendSwitch:
        return self._switch

    @property
    def degraded(self) -> bool:
        return self._switch.degraded

    def status(self) -> SwitchStatus:
        return self._switch.status()

    @property
    def fallback(self) -> SnapshotCache:
        return self._fallback

    async def get(self, job_id: str) -> CacheEntry | None:
        return await self._switch.serve(
            lambda: self._primary.get(job_id), lambda: self._fallback.get(job_id)
        )

    async def get_many(self, job_ids: Sequence[str]) -> list[CacheEntry | None]:
        """`get` for many ids at once, by the same rules: the whole batch goes to one side."""
        return await self._switch.serve(
            lambda: self._primary.get_many(job_ids), lambda: self._fallback.get_many(job_ids)
        )

    def peek_finished(self, job_id: str) -> Job | None:
        # Both sides' memories: a final snapshot is true wherever it was kept.
        return self._primary.peek_finished(job_id) or self._fallback.peek_finished(job_id)

    async def put(self, job_id: str, job: Job | None) -> None:
        await self._switch.serve(
            lambda: self._primary.put(job_id, job), lambda: self._fallback.put(job_id, job)
        )


class FailoverClaims:
    """`FetchClaims` served by `primary` (shared) and, while `switch` says the backend does not
    answer, by nobody: a fetch then holds `NO_LEASE` and calls, as a lone process would."""

    def __init__(self, primary: FetchClaims, switch: BackendSwitch) -> None:
        self._primary = primary
        self._switch = switch

    @property
    def primary(self) -> FetchClaims:
        return self._primary

    @property
    def switch(self) -> BackendSwitch:
        return self._switch

    @property
    def degraded(self) -> bool:
        return self._switch.degraded

    def status(self) -> SwitchStatus:
        return self._switch.status()

    async def claim(self, job_id: str, *, attempt: int = 0) -> ClaimOutcome:
        """The primary's answer, or `NO_LEASE` (call without a claim) when it does not answer."""

        async def no_claim() -> ClaimOutcome:
            return NO_LEASE

        outcome = await self._switch.serve(
            lambda: self._primary.claim(job_id, attempt=attempt), no_claim
        )
        if isinstance(outcome, CacheEntry | Held) or outcome is NO_LEASE:
            return outcome
        return _FailoverLease(outcome, self._switch)


class _FailoverLease:
    """A primary's lease, whose failed release counts as the primary failing."""

    __slots__ = ("_inner", "_switch")

    def __init__(self, inner: Lease, switch: BackendSwitch) -> None:
        self._inner = inner
        self._switch = switch

    async def release(self) -> None:
        try:
            await self._inner.release()
        except BackendUnavailable as exc:
            # The fetch is over; its claim now expires on its own.
            self._switch.failed(Route.PRIMARY, exc)
            raise
