"""The GraphQL enums say what the domain model says: one source, tied by these tests."""

from __future__ import annotations

from typing import cast

from gateway import model
from gateway.api.types import Algorithm, JobState


def test_job_state_has_the_model_s_states() -> None:
    assert [cast(str, state.value) for state in JobState] == [
        state.value for state in model.JobState
    ]
    assert [state.name for state in JobState] == [state.name for state in model.JobState]


def test_algorithm_lists_every_documented_function_and_nothing_else() -> None:
    assert [cast(str, algorithm.value) for algorithm in Algorithm] == list(model.KNOWN_FUNCTIONS)
