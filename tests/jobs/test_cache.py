from __future__ import annotations

import dataclasses

import pytest

from gateway.jobs.cache import CacheEntry, LocalSnapshotCache, running_expiry
from gateway.model import JobState
from gateway.settings import GatewaySettings

from .jobfakes import ManualClock, make_job


def make_cache(
    clock: ManualClock,
    *,
    terminal: float = 100.0,
    running: float = 1.0,
    not_found: float = 5.0,
    max_entries: int = 10,
) -> LocalSnapshotCache:
    return LocalSnapshotCache(
        terminal_ttl=terminal,
        running_ttl=running,
        not_found_ttl=not_found,
        max_entries=max_entries,
        clock=clock,
    )


@pytest.mark.parametrize(
    ("state", "ttl"),
    [
        (JobState.SUCCESS, 100.0),
        (JobState.FAIL, 100.0),
        (JobState.QUEUING, 1.0),
        (JobState.ANALYSING, 1.0),
        (JobState.UNKNOWN, 1.0),
        (None, 5.0),
    ],
)
async def test_ttl_follows_the_snapshot(state: JobState | None, ttl: float) -> None:
    clock = ManualClock()
    cache = make_cache(clock)
    job = make_job("j1", state) if state is not None else None
    await cache.put("j1", job)

    clock.now += ttl - 0.001
    assert await cache.get("j1") == CacheEntry(job)
    clock.now += 0.001
    assert await cache.get("j1") is None
    assert len(cache) == 0


async def test_least_recently_used_goes_first() -> None:
    clock = ManualClock()
    cache = make_cache(clock, max_entries=2)
    await cache.put("a", make_job("a"))
    await cache.put("b", make_job("b"))
    assert await cache.get("a") is not None  # "a" is now more recent than "b"
    await cache.put("c", make_job("c"))
    assert await cache.get("b") is None
    assert await cache.get("a") is not None
    assert await cache.get("c") is not None
    assert len(cache) == 2


async def test_a_newer_snapshot_replaces_the_older_one() -> None:
    clock = ManualClock()
    cache = make_cache(clock)
    await cache.put("a", make_job("a", JobState.ANALYSING))
    await cache.put("a", make_job("a", JobState.SUCCESS))
    clock.now += 50.0
    entry = await cache.get("a")
    assert entry is not None
    assert entry.job is not None
    assert entry.job.state is JobState.SUCCESS


async def test_ttl_zero_means_not_cached() -> None:
    clock = ManualClock()
    cache = make_cache(clock, running=0.0, not_found=0.0)
    await cache.put("gone", None)
    await cache.put("busy", make_job("busy", JobState.QUEUING))
    assert await cache.get("gone") is None
    assert await cache.get("busy") is None
    assert len(cache) == 0


async def test_uncacheable_answer_drops_an_older_entry() -> None:
    clock = ManualClock()
    cache = make_cache(clock, running=0.0)
    await cache.put("a", None)
    await cache.put("a", make_job("a", JobState.QUEUING))
    assert await cache.get("a") is None


def test_from_settings() -> None:
    settings = GatewaySettings(
        cache_terminal_ttl=7.0, cache_running_ttl=0.5, cache_not_found_ttl=2.0, cache_max_entries=3
    )
    cache = LocalSnapshotCache.from_settings(settings)
    assert len(cache) == 0


def test_rejects_negative_ttl() -> None:
    with pytest.raises(ValueError, match="running ttl"):
        LocalSnapshotCache(terminal_ttl=1, running_ttl=-1, not_found_ttl=1, max_entries=1)


async def test_peek_finished_serves_only_fresh_final_snapshots() -> None:
    clock = ManualClock()
    cache = make_cache(clock)
    done, failed, running = (
        make_job("d"),
        make_job("f", JobState.FAIL),
        make_job("r", JobState.ANALYSING),
    )
    for job in (done, failed, running):
        await cache.put(job.id, job)
    await cache.put("gone", None)

    assert [cache.peek_finished(i) for i in ("d", "f", "r", "gone", "never")] == [
        done,
        failed,
        None,
        None,
        None,
    ]
    clock.now += 100.0
    assert cache.peek_finished("d") is None


async def test_get_many_answers_each_id_in_order_repeats_included() -> None:
    clock = ManualClock()
    cache = make_cache(clock, running=1.0)
    done, busy = make_job("done"), make_job("busy", JobState.ANALYSING)
    await cache.put("done", done)
    await cache.put("busy", busy)
    await cache.put("gone", None)

    assert await cache.get_many(["busy", "never", "gone", "done", "busy"]) == [
        CacheEntry(busy),
        None,
        CacheEntry(None),
        CacheEntry(done),
        CacheEntry(busy),
    ]
    clock.now += 1.0  # the running ttl: only that entry expires
    assert await cache.get_many(["busy", "done"]) == [None, CacheEntry(done)]
    assert await cache.get_many([]) == []


async def test_get_many_never_suspends() -> None:
    # The fetcher relies on it: nothing runs between a request's read and its joins.
    cache = make_cache(ManualClock())
    await cache.put("a", make_job("a"))
    reading = cache.get_many(["a", "b"])
    with pytest.raises(StopIteration) as finished:
        reading.send(None)  # runs to its end at the first step
    assert finished.value.value == [CacheEntry(make_job("a")), None]


async def test_get_many_keeps_the_most_recently_read() -> None:
    clock = ManualClock()
    cache = make_cache(clock, max_entries=2)
    await cache.put("a", make_job("a"))
    await cache.put("b", make_job("b"))
    await cache.get_many(["a"])  # "a" is now more recent than "b"
    await cache.put("c", make_job("c"))
    assert await cache.get_many(["a", "b", "c"]) == [
        CacheEntry(make_job("a")),
        None,
        CacheEntry(make_job("c")),
    ]


@pytest.mark.parametrize(
    ("fetched_at", "ttl", "expiry"),
    [
        (10.2, 1.0, 11.0),  # a 1 s ttl: the next whole second at most 1 s on
        (10.0, 1.0, 11.0),  # fetched on the grid: the whole ttl
        (10.999, 1.0, 11.0),  # fetched just before a grid point: a millisecond
        (10.2, 60.0, 70.0),  # a long ttl: rounded down to a whole second, not a minute
        (10.2, 1.5, 11.25),  # 1.5 s: a grid of 0.75 s, of which the ttl is two steps
        (10.5, 1.5, 12.0),  # fetched on that grid: the whole ttl
        (10.27, 0.1, 10.3),  # a short ttl: a grid of that ttl
    ],
)
def test_a_running_expiry_is_rounded_down_to_a_grid(
    fetched_at: float, ttl: float, expiry: float
) -> None:
    assert running_expiry(fetched_at, ttl) == pytest.approx(expiry)
    assert fetched_at < running_expiry(fetched_at, ttl) <= fetched_at + ttl


async def test_running_snapshots_fetched_within_one_grid_step_expire_together() -> None:
    # Both clocks, the wall clock of fetchedAt and the cache's own, at 10.2 then 10.7.
    clock = ManualClock(start=10.2)
    cache = make_cache(clock, running=1.0)
    early = dataclasses.replace(make_job("early", JobState.ANALYSING), fetched_at=10.2)
    await cache.put("early", early)
    clock.now = 10.7
    late = dataclasses.replace(make_job("late", JobState.ANALYSING), fetched_at=10.7)
    await cache.put("late", late)

    clock.now = 10.999
    assert await cache.get_many(["early", "late"]) == [CacheEntry(early), CacheEntry(late)]
    clock.now = 11.0
    assert await cache.get_many(["early", "late"]) == [None, None]
