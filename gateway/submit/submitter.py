"""`JobSubmitter`: one upstream submission per submitJob, and per idempotency key at most one.

A submission takes a slot of the SubmitIProductionJob budget (its own limit, fair across
tenants, bound by the request's deadline), then makes one call. The upstream has no idempotency
token, so a call whose answer was lost may have created the job and is never retried; a call the
upstream throttled (`Throttling*`) created nothing and is retried, as queries are: each retry in
a new slot, after the retry policy's backoff (never sooner than the upstream's hint), only while
it can end before the deadline and someone still waits, and each throttle reported to the budget
(its AIMD signal), so that the retries themselves slow down. What each final outcome becomes:

- an answer: the new job, as a QUEUING snapshot built from the submission and its answer, put
  in the fetcher's cache so that queries and subscriptions start from it without a call;
- a refusal the upstream answered (throttled past the retries, rejected, credentials), or a call
  that never left (no slot, no connection): that error, and nothing was created;
- a lost answer (timeout, dropped connection, 5xx, garbled body): `SubmitOutcomeUnknown`.

With an idempotency key, the key's record (`gateway.submit.idempotency`) decides first: a key
already done answers its job (no call); one in doubt answers `SubmitOutcomeUnknown` again; one
used with other parameters `IdempotencyKeyReused`; one pending in another request (of any
process sharing the store) is waited for, up to the deadline. The call itself runs to its end
even if the request goes away, so that its outcome is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from types import TracebackType

from gateway import errors
from gateway.budget.protocol import Budget
from gateway.jobs.fetcher import JobFetcher
from gateway.jobs.retry import RetryPolicy
from gateway.model import Job
from gateway.mps.client import MpsClient
from gateway.mps.decode import decode_job
from gateway.shared.backend import BackendUnavailable
from gateway.submit.idempotency import IdempotencyStore, Record, record_key
from gateway.submit.request import Submission

__all__ = ["JobSubmitter", "Submitted"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at a key another request is submitting with.
POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a submitJob answers: the job (None only when a key's job is no longer known
    upstream), and whether it was answered from an earlier submission with the same key."""

    job: Job | None
    replayed: bool


class JobSubmitter:
    """See the module docstring. `clock` is the clock of `budget` and of deadlines (monotonic);
    `wall` the clock of snapshots and of pending records' leases, shared by processes."""

    def __init__(
        self,
        client: MpsClient,
        budget: Budget,
        fetcher: JobFetcher,
        store: IdempotencyStore,
        *,
        region: str | None,
        idempotency_ttl: float,
        call_timeout: float,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._client = client
        self._budget = budget
        self._fetcher = fetcher
        self._store = store
        self._region = region
        self._ttl = idempotency_ttl
        # The longest a call may last (connect + read timeouts): a pending record's owner that
        # has not settled by then, past its deadline too, is presumed dead.
        self._call_timeout = call_timeout
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._retry = retry
        self._uniform = uniform
        # Calls that outlive their request; the loop keeps only weak references to tasks.
        self._calls: set[asyncio.Task[Job]] = set()

    async def aclose(self, *, grace: float = 1.0) -> None:
        """Wait up to `grace` seconds for the calls under way, so their outcome is recorded."""
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=grace)

    async def submit(
        self, submission: Submission, *, key: str | None, deadline: float
    ) -> Submitted:
        """The job `submission` created, or the one its idempotency `key` already stands for;
        see the module docstring for the errors."""
        if key is None:
            return Submitted(await self._call(submission, deadline, keyed=False), replayed=False)
        name = record_key(submission.tenant, key)
        token = uuid.uuid4().hex
        while True:
            lease = self._wall() + max(0.0, deadline - self._clock()) + self._call_timeout + 1.0
            pending = Record("pending", submission.fingerprint, token=token, lease_until=lease)
            found = await self._store.begin(name, pending)
            if found is None:
                break
            if found.fingerprint != submission.fingerprint:
                raise errors.IdempotencyKeyReused(self._ttl)
            if found.state == "done" and found.job_id is not None:
                return Submitted(await self._replay(found.job_id, deadline), replayed=True)
            if found.state != "pending" or self._wall() > found.lease_until:
                raise errors.SubmitOutcomeUnknown(
                    cause="an earlier submission with this idempotency key",
                    upstream_request_id=None,
                    keyed=True,
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise errors.DeadlineExceeded(
                    "a submission with the same idempotency key was under way",
                    retry_after=errors.DEFAULT_RETRY_AFTER,
                )
            await self._sleep(min(POLL_INTERVAL, remaining))
        # This request owns the key: its call records the outcome.
        job = await self._call(submission, deadline, keyed=True, record=(name, token))
        return Submitted(job, replayed=False)

    async def _settle(self, name: str, token: str, record: Record | None) -> None:
        # Shielded: a request that goes away must not leave its key pending.
        settling = asyncio.ensure_future(self._store.settle(name, token, record))
        try:
            await asyncio.shield(settling)
        except BackendUnavailable as exc:
            # The pending record stays; after its lease it reads as in doubt, the safe side.
            logger.warning("Recording a submission's idempotency key failed: %s", exc.reason)

    async def _call(
        self,
        submission: Submission,
        deadline: float,
        *,
        keyed: bool,
        record: tuple[str, str] | None = None,
    ) -> Job:
        """One upstream submission inside one budget slot, its outcome recorded under
        `record` (the key's name and this request's token). Once its slot is granted, the call
        goes on to its end (and its record) even if the request is cancelled."""
        slot = _SubmitSlot(self._budget, deadline, submission.tenant)
        call = asyncio.ensure_future(
            self._send_and_record(submission, slot, deadline, keyed, record)
        )
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            if not slot.entered:
                call.cancel()
            # A call under way goes on to its end, but no retry follows it: nobody waits.
            slot.abandoned = True
            raise

    async def _send_and_record(
        self,
        submission: Submission,
        slot: _SubmitSlot,
        deadline: float,
        keyed: bool,
        record: tuple[str, str] | None,
    ) -> Job:
        try:
            job = await self._send_until_answered(submission, slot, deadline, keyed=keyed)
        except errors.SubmitOutcomeUnknown:
            if record is not None:
                await self._settle(*record, Record("in_doubt", submission.fingerprint))
            raise
        except BaseException:
            # Nothing was created (refused, or cancelled before its slot): the key is free.
            if record is not None:
                await self._settle(*record, None)
            raise
        if record is not None:
            await self._settle(*record, Record("done", submission.fingerprint, job_id=job.id))
        return job

    async def _send_until_answered(
        self, submission: Submission, slot: _SubmitSlot, deadline: float, *, keyed: bool
    ) -> Job:
        """`_send`, again after each throttled answer while the retry policy allows it and a
        retry can end before `deadline`; any other error ends it (see the module docstring)."""
        attempt = 0
        while True:
            try:
                return await self._send(submission, slot, keyed=keyed)
            except errors.UpstreamThrottled as exc:
                if not self._retry.should_retry(exc, attempt) or slot.abandoned:
                    raise
                delay = self._retry.delay(exc, attempt, self._uniform)
                if self._clock() + delay >= deadline:
                    raise  # a retry could not end before the deadline: the throttle stands
                attempt += 1
                logger.debug(
                    "Submission throttled (%s), retry %s in %.3f s", exc.code, attempt, delay
                )
                await self._sleep(delay)
                if slot.abandoned:
                    raise
                slot.renew()

    async def _send(self, submission: Submission, slot: _SubmitSlot, *, keyed: bool) -> Job:
        try:
            submitted = await self._client.submit_job(submission.request, held=slot)
        except errors.UpstreamThrottled:
            await self._report_throttled()
            raise
        except (errors.UpstreamAuthFailed, errors.UpstreamRejected):
            raise  # the upstream answered: no job
        except errors.UpstreamError as exc:
            if not exc.delivered:
                raise
            raise errors.SubmitOutcomeUnknown(
                cause=exc.upstream_code or exc.code, upstream_request_id=exc.request_id, keyed=keyed
            ) from exc
        job = self._snapshot(submission, submitted.job_id, submitted.request_id)
        await self._fetcher.prime(job)
        return job

    def _snapshot(self, submission: Submission, job_id: str, request_id: str | None) -> Job:
        """The new job as a query would answer it now: QUEUING, with what was submitted."""
        request = submission.request
        fields = {
            "JobId": job_id,
            "FunctionName": request.function_name,
            "State": "Queuing",
            "Input": request.input,
            "Output": request.output,
            "PipelineId": request.pipeline_id,
            "JobParams": request.job_params,
            "UserData": request.user_data,
            "RequestId": request_id,
        }
        body = {name: value for name, value in fields.items() if value is not None}
        job = decode_job(body, fetched_at=self._wall(), job_id=job_id, region=self._region)
        if job is None:  # pragma: no cover - a State and a JobId are always given above
            raise RuntimeError(f"Expected a snapshot of job {job_id}, received none.")
        return job

    async def _replay(self, job_id: str, deadline: float) -> Job | None:
        """The job an idempotency key stands for, through the fetcher (cached, most often)."""
        (outcome,) = await self._fetcher.get_many([job_id], deadline)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _report_throttled(self) -> None:
        try:
            await self._budget.throttled()
        except BackendUnavailable as exc:
            logger.warning("Could not report upstream throttling to the budget: %s", exc.reason)


class _SubmitSlot:
    """The budget slot of one submission's current attempt; `entered` once granted (the call
    may then be sent), `abandoned` once its request went away (no retry is then made)."""

    __slots__ = ("_budget", "_deadline", "_inner", "_key", "abandoned", "entered")

    def __init__(self, budget: Budget, deadline: float, tenant: str | None) -> None:
        self._budget = budget
        self._deadline = deadline
        # Fair across tenants; callers with no tenant queue together.
        self._key: Hashable = ("tenant", tenant)
        self._inner = budget.slot(deadline, key=self._key)
        self.entered = False
        self.abandoned = False

    def renew(self) -> None:
        """A new slot for a retry (a slot is entered once); not entered until granted."""
        self._inner = self._budget.slot(self._deadline, key=self._key)
        self.entered = False

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()
        self.entered = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)
