"""The budget's round-robin is keyed by tenant: a tenant sending twenty times more ids, over
many requests, gets no more upstream calls than one sending few, while both wait. Counted in
calls on a manual clock, never timed."""

from __future__ import annotations

import asyncio

import pytest

from gateway.api.context import Context
from gateway.api.views import JobViews
from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller, Scope
from tests.jobs.jobfakes import Rig, settle

LIMIT = 10


def reader(tenant: str) -> Caller:
    return Caller(name=tenant, tenant=tenant, scopes=frozenset({Scope.READ}), method="jwt")


def request(rig: Rig, caller: Caller) -> Context:
    """A GraphQL request's context, as the app makes it (its loader keyed by its caller)."""
    return Context(
        fetcher=rig.fetcher,
        deadline=rig.deadline(1000.0),
        max_ids=100,
        views=JobViews(),
        timeout=1000.0,
        max_page_size=100,
        caller=caller,
    )


async def calls_until_the_small_tenant_is_served(heavy: Caller, light: Caller) -> int:
    """Calls the upstream received until the light tenant's 10 ids were all called, while the
    heavy one asks for 200 ids over 10 requests, first."""
    rig = Rig(limit=LIMIT, concurrency=LIMIT)
    heavy_ids = [[f"heavy-{r}-{i}" for i in range(20)] for r in range(10)]
    light_ids = [f"light-{i}" for i in range(10)]
    loads = []
    for ids in heavy_ids:
        loader = request(rig, heavy).jobs
        loads += [loader.load(job_id) for job_id in ids]
    await settle()
    loader = request(rig, light).jobs
    light_loads = [loader.load(job_id) for job_id in light_ids]
    await settle()
    while not all(load.done() for load in light_loads):
        await rig.clock.advance(1.0)
    calls = rig.source.calls
    served = max(calls.index(job_id) for job_id in light_ids) + 1
    await rig.clock.run_until_idle()
    await asyncio.gather(*loads, *light_loads)
    assert sorted(calls) == sorted([*light_ids, *(i for ids in heavy_ids for i in ids)])
    return served


async def test_two_tenants_share_the_budget_by_tenant_not_by_request() -> None:
    served = await calls_until_the_small_tenant_is_served(reader("acme"), reader("globex"))
    # The first window's burst went to the heavy tenant (it asked first); after it, one call
    # each in turn: the light tenant's 10 ids are done within 20 calls, not behind 200.
    assert served <= LIMIT + 2 * 10


async def test_without_tenants_every_request_is_a_key_of_its_own() -> None:
    # The control: keyed by request (no authentication), the heavy side's ten requests take
    # ten turns for each of the light one's, so its ids wait far longer.
    served = await calls_until_the_small_tenant_is_served(
        UNAUTHENTICATED_OPERATOR, UNAUTHENTICATED_OPERATOR
    )
    assert served > LIMIT + 5 * 10


@pytest.mark.parametrize(
    ("caller", "key"),
    [
        (reader("acme"), ("tenant", "acme")),
        (Caller("ops", None, frozenset({Scope.READ_ALL}), "api-key"), ("caller", "api-key:ops")),
        (UNAUTHENTICATED_OPERATOR, None),
    ],
)
def test_fairness_keys(caller: Caller, key: tuple[str, str] | None) -> None:
    assert caller.fairness_key == key
