"""A request's waits end before its deadline, leaving time to make and send the answer."""

from __future__ import annotations

import pytest

from gateway.api.context import ANSWER_RESERVE, waits_end


def test_waits_end_the_reserve_before_the_deadline() -> None:
    assert waits_end(100.0, 10.0) == pytest.approx(100.0 - ANSWER_RESERVE)


def test_a_short_timeout_keeps_a_twentieth_of_itself() -> None:
    # 0.3 s asked: its waits may use 0.285 s of it, not 0.2.
    assert waits_end(100.0, 0.3) == pytest.approx(100.0 - 0.015)
    assert waits_end(100.0, 0.0) == 100.0
