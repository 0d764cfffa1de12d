"""`Page`: which items of a list `first` and `after` select, and the cursors that name positions.

A page never holds more than the gateway's maximum page size (`GATEWAY_MAX_PAGE_SIZE`): `first`
over it, or negative, is INVALID_ARGUMENT, and no `first` asks for that maximum. Cursors are
opaque to clients; they are base64 of `arrayconnection:<index>`, the format of graphql-relay-js
and of Strawberry's connections, encoded with Strawberry's helper. A cursor is accepted only
exactly as this module writes it: anything else sent as `after` is INVALID_ARGUMENT, never a
silent first page. An index past the end selects an empty page.

Written here rather than taken from Strawberry's `ListConnection`: its argument errors are bare
ValueError and TypeError (masked as INTERNAL_ERROR by this gateway), it accepts any base64 text
holding a number as a cursor, negative ones included, and it has no total count.
"""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.relay.utils import from_base64, to_base64

from gateway.api.arguments import Range
from gateway.errors import InvalidArgument

CURSOR_PREFIX = "arrayconnection"

#: How `after` is described in errors (and what a client should send instead).
CURSOR_EXPECTED = "to be a cursor this list gave (an edge's cursor, or pageInfo.endCursor)"


def cursor_of(index: int) -> str:
    """The cursor of the item at `index` (from 0)."""
    return to_base64(CURSOR_PREFIX, index)


def index_of(cursor: str) -> int | None:
    """The index `cursor` names, or None when `cursor_of` never wrote it."""
    try:
        prefix, text = from_base64(cursor)
    except ValueError:
        return None
    if prefix != CURSOR_PREFIX or not (text.isascii() and text.isdigit()):
        return None
    index = int(text)
    # Only the canonical spelling: no leading zeros, padding or stray characters.
    return index if cursor_of(index) == cursor else None


def page_size_range(max_size: int) -> Range:
    """The range `first` must lie in."""
    return Range(0, max_size, note="the gateway's maximum page size")


@dataclass(frozen=True, slots=True)
class Page:
    """Items [start, end) of a list of `total` items."""

    start: int
    end: int
    total: int

    @classmethod
    def select(cls, total: int, *, first: int | None, after: str | None, max_size: int) -> Page:
        """The page of a list of `total` items that `first` and `after` ask for; raises
        InvalidArgument for a `first` outside 0..max_size or an `after` that is no cursor of
        this module's, whatever the list holds."""
        size = max_size if first is None else page_size_range(max_size).check("first", first)
        start = 0
        if after is not None:
            index = index_of(after)
            if index is None:
                raise InvalidArgument("after", CURSOR_EXPECTED, after)
            start = min(index + 1, total)
        return cls(start=start, end=min(start + size, total), total=total)

    @property
    def has_next_page(self) -> bool:
        return self.end < self.total

    @property
    def has_previous_page(self) -> bool:
        return self.start > 0

    def cursors(self) -> list[str]:
        """The cursor of each item of the page, in order."""
        return [cursor_of(index) for index in range(self.start, self.end)]
