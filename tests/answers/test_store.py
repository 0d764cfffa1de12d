"""`AnswerStore`: admission, the byte bound, protection from floods, expiry (a hand-moved clock)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.answers.store import ENTRY_OVERHEAD, Answer, AnswerStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def answer(body: bytes = b'{"data":{}}', *, expires_at: float = 2_000_000.0) -> Answer:
    return Answer(
        body=body,
        content_type=b"application/json",
        expires_at=expires_at,
        immutable=True,
        private=False,
        operation="query",
        etag=b'"x"',
    )


def keep(store: AnswerStore, name: str, value: Answer) -> bool:
    """Offer `value` twice, as two identical requests would: kept on the second sighting."""
    store.offer(key(name), value)
    return store.offer(key(name), value)


def test_an_answer_is_kept_on_its_second_sighting_only() -> None:
    store = AnswerStore(100_000, max_answer_bytes=10_000, clock=Clock())
    first = answer()

    assert store.offer(key("a"), first) is False
    assert store.get(key("a")) is None
    assert store.offer(key("a"), first) is True
    assert store.get(key("a")) is first
    assert (store.stats.first_sightings, store.stats.admitted, store.stats.hits) == (1, 1, 1)


def test_an_expired_answer_is_a_miss_and_is_dropped() -> None:
    clock = Clock()
    store = AnswerStore(100_000, max_answer_bytes=10_000, clock=clock)
    assert keep(store, "a", answer(expires_at=clock.now + 10))

    clock.now += 9.9
    assert store.get(key("a")) is not None
    clock.now += 0.1
    assert store.get(key("a")) is None
    assert len(store) == 0
    assert store.stats.expired == 1


def test_an_answer_over_the_size_limit_is_never_kept() -> None:
    store = AnswerStore(1_000_000, max_answer_bytes=1_000, clock=Clock())

    assert not keep(store, "big", answer(b"x" * 1_001))
    assert keep(store, "fits", answer(b"x" * 1_000))
    assert store.get(key("big")) is None
    assert store.stats.too_large == 2


def test_the_bytes_kept_stay_within_the_bound_whatever_the_mix() -> None:
    bound = 50_000
    store = AnswerStore(bound, max_answer_bytes=5_000, clock=Clock())
    for n in range(2_000):
        keep(store, f"k{n}", answer(b"x" * (n % 5_000)))
        if n % 3 == 0:
            store.get(key(f"k{n}"))
        assert store.bytes <= bound
    assert store.bytes == sum(
        len(value.body) + ENTRY_OVERHEAD
        for segment in (store._probation, store._protected)
        for value in segment.values()
    )


def test_a_flood_of_new_keys_does_not_push_out_the_answers_asked_again() -> None:
    # 40 popular answers of 1 KB in a store of 100 KB; then 10,000 distinct requests (random
    # variables), each sent twice so that every one is admitted.
    store = AnswerStore(100_000, max_answer_bytes=10_000, clock=Clock())
    popular = [f"popular{n}" for n in range(40)]
    for name in popular:
        keep(store, name, answer(b"p" * 1_000))
        assert store.get(key(name)) is not None  # asked again: protected

    for n in range(10_000):
        keep(store, f"attack{n}", answer(b"a" * 1_000))

    assert all(store.get(key(name)) is not None for name in popular)
    assert store.bytes <= 100_000
    assert store.stats.evicted > 9_000


def test_a_flood_asked_once_each_is_never_kept() -> None:
    store = AnswerStore(100_000, max_answer_bytes=10_000, doorkeeper_entries=1_000, clock=Clock())
    for n in range(10_000):
        assert store.offer(key(f"once{n}"), answer()) is False
    assert len(store) == 0
    # The doorkeeper is bounded too: it remembers the last 1,000 sightings only.
    assert len(store._seen) == 1_000


def test_a_store_of_zero_bytes_keeps_nothing() -> None:
    store = AnswerStore(0, max_answer_bytes=10_000, clock=Clock())
    assert not store.enabled
    assert not keep(store, "a", answer())


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        AnswerStore(-1, max_answer_bytes=0)
