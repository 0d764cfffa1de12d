"""FairQueue: round-robin across keys, FIFO within a key, and the position lower bound."""

from __future__ import annotations

from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.budget.fair_queue import FairQueue, Ticket

T = TypeVar("T")


def drain(queue: FairQueue[T]) -> list[T]:
    out: list[T] = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_keys_take_turns_and_each_key_keeps_its_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ["a1", "a2", "a3"]:
        queue.push("a", item)
    queue.push("b", "b1")
    queue.push("c", "c1")
    queue.push("c", "c2")
    assert (len(queue), queue.keys) == (6, 3)
    assert drain(queue) == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert (len(queue), queue.keys, bool(queue)) == (0, 0, False)


def test_a_key_just_served_goes_behind_a_key_that_arrived_meanwhile() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a1")
    queue.push("a", "a2")
    assert queue.pop() == "a1"
    queue.push("b", "b1")
    assert drain(queue) == ["a2", "b1"]


def test_a_key_whose_items_all_left_queues_again_at_the_back() -> None:
    queue: FairQueue[str] = FairQueue()
    gone = [queue.push("a", "a1"), queue.push("a", "a2")]
    queue.push("b", "b1")
    for ticket in gone:
        assert queue.discard(ticket)
    assert queue.keys == 1
    queue.push("a", "a3")
    assert queue.position("c") == 2
    assert drain(queue) == ["b1", "a3"]


def test_discard_is_lazy_but_exact() -> None:
    queue: FairQueue[str] = FairQueue()
    tickets = {item: queue.push(item[0], item) for item in ["a1", "a2", "a3", "b1"]}
    assert queue.discard(tickets["a2"])
    assert not queue.discard(tickets["a2"])  # twice: no effect
    assert len(queue) == 3
    assert queue.pop() == "a1"
    assert not queue.discard(tickets["a1"])  # popped already
    assert drain(queue) == ["b1", "a3"]


def test_position_is_exact_for_a_new_key_and_counts_turns_for_a_waiting_one() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1000):
        queue.push("big", f"big{i}")
    queue.push("small", "s1")
    # A new key waits for one turn of each key waiting.
    assert queue.position("new") == 2
    # A second item of "small" waits for small's first and one more of "big".
    assert queue.position("small") == 2
    queue.push("small", "s2")
    order = drain(queue)
    assert order.index("s1") == 1
    assert order.index("s2") == 3


def test_position_grows_past_the_first_tree_size() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(300):
        queue.push("a", i)
        queue.push("b", i)
    # "a" has 300 queued; "b" 300: a new "a" item waits for all of them.
    assert queue.position("a") == 600
    assert queue.position("c") == 2


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from("abcd")),
        st.tuples(st.just("pop"), st.just("")),
        st.tuples(st.just("discard"), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(deadline=None)
@given(ops=operations, key=st.sampled_from("abcde"))
def test_position_is_a_lower_bound_and_exact_for_a_new_key(
    ops: list[tuple[str, str | int]], key: str
) -> None:
    queue: FairQueue[int] = FairQueue()
    tickets: list[tuple[str, Ticket[int]]] = []
    for op, arg in ops:
        if op == "push":
            assert isinstance(arg, str)
            tickets.append((arg, queue.push(arg, len(tickets))))
        elif op == "pop":
            queue.pop()
        elif tickets:
            assert isinstance(arg, int)
            queue.discard(tickets[arg % len(tickets)][1])
    live = [k for k, ticket in tickets if ticket.live]
    assert len(queue) == len(live)
    assert queue.keys == len(set(live))

    bound = queue.position(key)
    queue.push(key, -1)
    order = drain(queue)
    assert len(order) == len(live) + 1
    # Nothing is pushed while draining, so the bound holds for the real order...
    assert bound <= order.index(-1)
    # ... and is exact when the key had nothing queued.
    if key not in live:
        assert bound == order.index(-1)
