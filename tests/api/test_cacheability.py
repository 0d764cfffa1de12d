"""`Cacheability` of answers that read running snapshots: how long they may be kept."""

from __future__ import annotations

import dataclasses

from gateway.api.cacheability import Cacheability
from gateway.jobs.versions import SnapshotVersions
from gateway.model import JobState
from tests.jobs.jobfakes import make_job


def test_an_answer_of_running_snapshots_lives_until_the_grid_point_they_expire_at() -> None:
    versions = SnapshotVersions()
    verdict = Cacheability(3600.0, running_ttl=1.0)
    # Fetched half a second apart, within one step of the grid (the 1 s ttl): both expire at
    # 11.0, and so does the answer, instead of at 11.2, the earlier of their own ttls' ends.
    for job_id, fetched_at in (("a", 10.2), ("b", 10.7)):
        job = dataclasses.replace(make_job(job_id, JobState.ANALYSING), fetched_at=fetched_at)
        versions.stored(job_id, job)
        verdict.read_running(job, versions)
    verdict.ended("query", "query Poll", 0)

    assert verdict.cacheable
    assert verdict.until == 11.0
    assert dict(verdict.snapshots) == {"a": (10.2, "request-a"), "b": (10.7, "request-b")}
