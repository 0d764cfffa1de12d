from __future__ import annotations

import pytest

from gateway import errors
from gateway.jobs.ids import validate_job_id


@pytest.mark.parametrize(
    "job_id",
    ["88c6ca184c0e432bbf5b665e2a15ab12", "a", "A-b_9", "x" * 64],
)
def test_accepts_plausible_ids(job_id: str) -> None:
    validate_job_id(job_id)


@pytest.mark.parametrize(
    ("job_id", "reason"),
    [
        ("", "expected 1 to 64 characters, received none"),
        ("x" * 65, "expected at most 64 characters, received 65"),
        ("abc def", "received ' ' at position 3"),
        ("abc\n", "received '\\n' at position 3"),
        ("job/../1", "received '/' at position 3"),
        ("idé", "received 'é' at position 2"),
    ],
)
def test_rejects_with_a_reason(job_id: str, reason: str) -> None:
    with pytest.raises(errors.InvalidJobId) as caught:
        validate_job_id(job_id)
    assert reason in caught.value.message
    assert caught.value.extensions == {"code": "INVALID_JOB_ID", "jobId": job_id}
