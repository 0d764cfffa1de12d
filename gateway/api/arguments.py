"""`Range`: the documented range of a numeric field argument, and its check.

One object per range gives both the text the schema's description shows and the check the
resolver makes, so that what the schema documents is what the gateway refuses. A value outside
its range is never clamped: it is an `InvalidArgument` error (INVALID_ARGUMENT) whose message
names the argument, the range and the value received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from gateway.errors import InvalidArgument

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Range:
    """The closed range [low, high]; `str()` reads "from 1 to 604800 seconds (7 days)"."""

    low: float
    high: float
    #: What the numbers count ("seconds"); empty for a plain count.
    unit: str = ""
    #: A gloss shown after the range ("7 days").
    note: str = ""

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        note = f" ({self.note})" if self.note else ""
        return f"from {_number(self.low)} to {_number(self.high)}{unit}{note}"

    def check(self, argument: str, value: N) -> N:
        """`value` itself when it lies in the range; otherwise raises InvalidArgument."""
        if not self.low <= value <= self.high:
            raise InvalidArgument(argument, str(self), value)
        return value


def _number(value: float) -> str:
    # 60.0 reads "60" and 0.5 "0.5"; integers as they are (604800, never 6.048e+05).
    return str(value) if isinstance(value, int) else f"{value:g}"
