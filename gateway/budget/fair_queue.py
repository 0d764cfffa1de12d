"""`FairQueue`: waiters grouped by key, served round-robin across keys, FIFO within a key.

A budget serves its waiters through one of these so that a request for one id is not stuck
behind another request's thousand: each key (one GraphQL request, say) gets one turn per round,
and a key that was just served goes to the back. Within a key, items leave in arrival order.

Costs: `push`, `discard` and `position` are O(log n) (n: the longest queue of one key); `pop` is
amortized O(1). Removal is lazy: a discarded item stays in its key's deque, marked dead, until it
reaches the front; a key whose items are all gone leaves the rotation at once (a new item of that
key then queues at the back, as a newcomer should).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["FairQueue", "Ticket"]

T = TypeVar("T")


class _Lane(Generic[T]):
    """The items of one key, in arrival order (dead ones included until they reach the front)."""

    __slots__ = ("entries", "key", "live")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.entries: deque[Ticket[T]] = deque()
        self.live = 0


class Ticket(Generic[T]):
    """An item's place in the queue, returned by `push`; pass it to `discard`."""

    __slots__ = ("_lane", "item", "live")

    def __init__(self, lane: _Lane[T], item: T) -> None:
        self._lane = lane
        self.item = item
        #: True while the item is queued (not popped, not discarded).
        self.live = True


class FairQueue(Generic[T]):
    """Items grouped by key; see the module docstring.

    `len(queue)` counts the items queued; `keys` counts the keys that have at least one.
    """

    __slots__ = ("_lanes", "_lengths", "_rotation", "_size")

    def __init__(self) -> None:
        # Keys with at least one queued item. A lane whose last item goes leaves this dict at
        # once, but may linger in `_rotation` (removing it there would cost O(keys)): `pop`
        # skips such husks.
        self._lanes: dict[Hashable, _Lane[T]] = {}
        # Lanes in serving order: the next one to serve first.
        self._rotation: deque[_Lane[T]] = deque()
        self._lengths = _LengthCounts()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    @property
    def keys(self) -> int:
        """Keys with at least one item queued."""
        return len(self._lanes)

    def position(self, key: Hashable) -> int:
        """A lower bound on the items `pop` returns before an item of `key` pushed now,
        assuming nothing else is pushed meanwhile (newcomers can only come on top).

        With j items of `key` queued already: if j = 0 the key queues at the back of the
        rotation, behind one item of each of the `keys` other keys: exactly `keys`. Otherwise
        the item leaves in `key`'s (j+1)-th turn; before it, every key k with n_k items has at
        least min(n_k, j) turns (its own key: its j items), so the bound is the sum over keys
        of min(n_k, j). It is short by at most one item per key that is ahead of `key` in the
        current round, which is about j times the number of keys for equal backlogs.
        """
        lane = self._lanes.get(key)
        if lane is None:
            return len(self._lanes)
        return self._lengths.sum_of_min(lane.live)

    def push(self, key: Hashable, item: T) -> Ticket[T]:
        """Queue `item` under `key`, behind the items of `key` already queued."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane(key)
            self._lanes[key] = lane
            self._rotation.append(lane)
        ticket = Ticket(lane, item)
        lane.entries.append(ticket)
        lane.live += 1
        self._lengths.add(lane.live, 1)
        self._size += 1
        return ticket

    def discard(self, ticket: Ticket[T]) -> bool:
        """Remove a queued item. False if it had left already (popped or discarded)."""
        if not ticket.live:
            return False
        self._remove(ticket)
        return True

    def pop(self) -> T | None:
        """The next item: the oldest of the key whose turn it is (None when empty). That key
        goes to the back of the rotation if it has more."""
        rotation = self._rotation
        while rotation:
            lane = rotation.popleft()
            if lane.live == 0:
                continue  # a husk: its items were all discarded
            entries = lane.entries
            while not entries[0].live:
                entries.popleft()
            ticket = entries.popleft()
            self._remove(ticket)
            if lane.live > 0:
                rotation.append(lane)
            return ticket.item
        return None

    def _remove(self, ticket: Ticket[T]) -> None:
        lane = ticket._lane
        ticket.live = False
        self._lengths.add(lane.live, -1)
        lane.live -= 1
        self._size -= 1
        if lane.live == 0:
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            lane.entries.clear()
        if self._size == 0:
            self._rotation.clear()


class _LengthCounts:
    """For every m >= 1, how many keys hold at least m items, in a Fenwick tree, so that the
    sum over keys of min(length, j) (= the sum of those counts for m = 1..j) costs O(log n)."""

    __slots__ = ("_counts", "_tree")

    def __init__(self) -> None:
        # 1-based; index 0 unused. `_counts` keeps the plain values for rebuilding on growth.
        self._counts = [0] * 65
        self._tree = [0] * 65

    def add(self, m: int, delta: int) -> None:
        """A key's length went from m - 1 to m (delta 1), or from m to m - 1 (delta -1)."""
        size = len(self._tree)
        if m >= size:
            self._grow(m)
            size = len(self._tree)
        self._counts[m] += delta
        tree = self._tree
        while m < size:
            tree[m] += delta
            m += m & -m

    def sum_of_min(self, j: int) -> int:
        """The sum over keys of min(length, j)."""
        tree = self._tree
        j = min(j, len(tree) - 1)
        total = 0
        while j > 0:
            total += tree[j]
            j -= j & -j
        return total

    def _grow(self, m: int) -> None:
        size = len(self._tree)
        while size <= m:
            size *= 2
        counts = self._counts + [0] * (size - len(self._counts))
        tree = counts.copy()
        for i in range(1, size):
            parent = i + (i & -i)
            if parent < size:
                tree[parent] += tree[i]
        self._counts, self._tree = counts, tree
