"""JobLoader: the batches it makes, per-key errors, and what it memoizes."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from gateway import errors
from gateway.jobs.fetcher import FetchResult, JobFetcher
from gateway.jobs.loader import JobLoader
from gateway.model import JobState

from .jobfakes import Rig, make_job, settle


class RecordingFetcher(JobFetcher):
    """The real fetcher, remembering the batches it was asked for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[str]] = []
        self.requesters: list[Hashable | None] = []

    async def get_many(
        self, job_ids: Sequence[str], deadline: float, *, requester: Hashable | None = None
    ) -> list[FetchResult]:
        self.batches.append(list(job_ids))
        self.requesters.append(requester)
        return await super().get_many(job_ids, deadline, requester=requester)


class BrokenFetcher(RecordingFetcher):
    """A fetcher whose whole batch fails (as a bug would make it)."""

    async def get_many(
        self, job_ids: Sequence[str], deadline: float, *, requester: Hashable | None = None
    ) -> list[FetchResult]:
        self.batches.append(list(job_ids))
        raise RuntimeError("the batch broke")


def recording_rig(**options: object) -> tuple[Rig, RecordingFetcher]:
    rig = Rig(fetcher_type=RecordingFetcher, **options)  # type: ignore[arg-type]
    assert isinstance(rig.fetcher, RecordingFetcher)
    return rig, rig.fetcher


async def test_loads_of_one_tick_make_one_batch() -> None:
    rig, fetcher = recording_rig()
    a, b = make_job("a"), make_job("b")
    rig.source.add(a, b)
    loader = JobLoader(fetcher, rig.deadline())
    assert list(await asyncio.gather(loader.load("a"), loader.load("b"))) == [a, b]
    assert fetcher.batches == [["a", "b"]]


async def test_an_error_value_rejects_only_its_key() -> None:
    rig, fetcher = recording_rig()
    a = make_job("a")
    rig.source.add(a)
    loader = JobLoader(fetcher, rig.deadline())
    outcomes = await asyncio.gather(
        loader.load("a"), loader.load("not valid"), loader.load("missing"), return_exceptions=True
    )
    assert outcomes[0] == a
    assert isinstance(outcomes[1], errors.InvalidJobId)
    assert outcomes[2] is None
    assert fetcher.batches == [["a", "not valid", "missing"]]


async def test_a_key_is_loaded_once_per_request() -> None:
    rig, fetcher = recording_rig()
    a = make_job("a")
    rig.source.add(a)
    loader = JobLoader(fetcher, rig.deadline())
    assert list(await asyncio.gather(loader.load("a"), loader.load("a"))) == [a, a]
    assert await loader.load("a") == a
    assert fetcher.batches == [["a"]]


async def test_each_request_has_its_own_memo() -> None:
    rig, fetcher = recording_rig()
    a = make_job("a")
    rig.source.add(a)
    unavailable = errors.UpstreamUnavailable("503")
    rig.source.fail("a", unavailable)
    first = JobLoader(fetcher, rig.deadline())
    with pytest.raises(errors.UpstreamUnavailable):
        await first.load("a")
    # Another request does not see the first one's error: it asks again.
    second = JobLoader(fetcher, rig.deadline())
    assert await second.load("a") == a
    assert fetcher.batches == [["a"], ["a"]]


async def test_a_failed_batch_rejects_every_key_and_memoizes_nothing() -> None:
    rig = Rig(fetcher_type=BrokenFetcher)
    fetcher = rig.fetcher
    assert isinstance(fetcher, BrokenFetcher)
    loader = JobLoader(fetcher, rig.deadline())
    outcomes = await asyncio.gather(loader.load("a"), loader.load("b"), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["the batch broke", "the batch broke"]
    with pytest.raises(RuntimeError):
        await loader.load("a")
    assert fetcher.batches == [["a", "b"], ["a"]]


@pytest.mark.parametrize(("keys", "sizes"), [(100, [100]), (150, [100, 50])])
async def test_batches_hold_up_to_100_keys(keys: int, sizes: list[int]) -> None:
    rig, fetcher = recording_rig(limit=keys)
    ids = [f"j{i}" for i in range(keys)]
    loader = JobLoader(fetcher, rig.deadline())
    assert await loader.load_many(ids) == [None] * keys
    assert [len(batch) for batch in fetcher.batches] == sizes


async def test_all_batches_of_a_loader_share_one_requester() -> None:
    rig, fetcher = recording_rig(limit=152)
    first = JobLoader(fetcher, rig.deadline())
    second = JobLoader(fetcher, rig.deadline())
    await asyncio.gather(
        first.load_many([f"j{i}" for i in range(150)]), second.load_many(["a", "b"])
    )
    assert [len(batch) for batch in fetcher.batches] == [100, 50, 2]
    assert fetcher.requesters == [first.requester, first.requester, second.requester]
    assert first.requester is not None
    assert first.requester != second.requester


async def test_a_request_that_goes_away_stops_its_batch() -> None:
    rig, fetcher = recording_rig(limit=1)
    gate = asyncio.Event()
    holder = await rig.hold_budget(gate)
    loader = JobLoader(fetcher, rig.deadline())
    loads = asyncio.gather(loader.load("a"), loader.load("b"))
    await settle()
    assert rig.budget.status().waiting == 2
    loads.cancel()
    await settle()
    # The batch stopped waiting, so its fetches left the budget queue before spending anything.
    assert rig.budget.status().waiting == 0
    assert rig.fetcher.stats().abandoned == 2
    gate.set()
    await holder
    await rig.clock.advance(5.0)
    assert rig.source.calls == []
    # The cancelled loads are not memoized: loading again asks again.
    rig.source.add(make_job("a"))
    assert await loader.load("a") == make_job("a")


async def test_one_cancelled_load_does_not_stop_the_batch() -> None:
    rig, fetcher = recording_rig()
    rig.source.add(make_job("a"), make_job("b"))
    rig.source.gate = asyncio.Event()
    loader = JobLoader(fetcher, rig.deadline())
    dropped = asyncio.ensure_future(loader.load("a"))
    kept = asyncio.ensure_future(loader.load("b"))
    await settle()
    dropped.cancel()
    rig.source.gate.set()
    assert await kept == make_job("b")
    assert sorted(rig.source.calls) == ["a", "b"]


def test_a_loader_needs_a_running_loop() -> None:
    rig = Rig()
    with pytest.raises(RuntimeError):
        JobLoader(rig.fetcher, 0.0)


async def test_a_cached_finished_job_is_answered_without_a_batch() -> None:
    rig, fetcher = recording_rig()
    done, running = make_job("done"), make_job("running", JobState.ANALYSING)
    rig.source.add(done, running)
    first = JobLoader(fetcher, rig.deadline())
    assert list(await asyncio.gather(first.load("done"), first.load("running"))) == [
        done,
        running,
    ]

    second = JobLoader(fetcher, rig.deadline())
    assert list(await asyncio.gather(second.load("done"), second.load("running"))) == [
        done,
        running,
    ]

    # The final snapshot came straight from memory; the running one went through a batch (and
    # the fetcher's cache, for its short ttl).
    assert fetcher.batches == [["done", "running"], ["running"]]
    assert rig.source.calls == ["done", "running"]
