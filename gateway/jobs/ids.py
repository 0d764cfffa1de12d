"""What a job id may look like before the gateway spends an upstream call on it."""

from __future__ import annotations

import re

from gateway import errors

#: Longest job id accepted. Real ids are 32 hex digits; the rule is looser on purpose, so that a
#: change of id format upstream does not lock clients out, while junk never costs a call.
MAX_JOB_ID_LENGTH = 64

_ALLOWED = re.compile(r"[A-Za-z0-9_-]+")
_FIRST_BAD = re.compile(r"[^A-Za-z0-9_-]")


def validate_job_id(job_id: str) -> None:
    """Return if `job_id` could be a job id; raise `errors.InvalidJobId` saying why otherwise.

    Accepted: 1 to 64 characters, each an ASCII letter, digit, `_` or `-`.
    """
    if not job_id:
        raise errors.InvalidJobId(job_id, "expected 1 to 64 characters, received none")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise errors.InvalidJobId(
            job_id, f"expected at most {MAX_JOB_ID_LENGTH} characters, received {len(job_id)}"
        )
    if _ALLOWED.fullmatch(job_id) is None:
        bad = _FIRST_BAD.search(job_id)
        assert bad is not None  # fullmatch failed, so some character is outside the class
        raise errors.InvalidJobId(
            job_id,
            f"expected only letters, digits, '_' and '-', received {bad.group()!r} "
            f"at position {bad.start()}",
        )
