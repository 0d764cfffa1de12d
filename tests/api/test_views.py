"""JobViews: one GraphQL view per snapshot object, bounded."""

from __future__ import annotations

from gateway.api.views import JobViews
from tests.jobs.jobfakes import make_job


def test_a_snapshot_has_one_view_and_a_newer_snapshot_another() -> None:
    views = JobViews()
    snapshot = make_job("a")
    newer = make_job("a")  # equal, but another fetch: another object

    assert views.of(snapshot) is views.of(snapshot)
    assert views.of(newer) is not views.of(snapshot)
    assert views.of(newer).id == "a"


def test_the_least_recently_used_view_goes_first() -> None:
    views = JobViews(max_entries=2)
    a, b, c = make_job("a"), make_job("b"), make_job("c")
    view_a = views.of(a)
    views.of(b)
    assert views.of(a) is view_a  # a is now the most recent
    views.of(c)  # evicts b
    assert len(views) == 2
    assert views.of(a) is view_a
