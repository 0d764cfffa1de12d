"""TenantRateLimit on a manual clock: a burst, then `qps` a second, per tenant."""

from __future__ import annotations

import pytest

from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller, Scope
from gateway.callers.rate import TenantRateLimit
from gateway.errors import RateLimited
from tests.jobs.jobfakes import ManualClock


def reader(tenant: str, name: str = "c") -> Caller:
    return Caller(name=name, tenant=tenant, scopes=frozenset({Scope.READ}), method="jwt")


def test_a_tenant_gets_a_burst_then_its_rate() -> None:
    clock = ManualClock()
    limit = TenantRateLimit(2.0, clock=clock)
    acme, acme_too, globex = reader("acme"), reader("acme", "other"), reader("globex")
    limit.check(acme)
    limit.check(acme_too)  # the same tenant, another caller: one bucket
    with pytest.raises(RateLimited) as caught:
        limit.check(acme)
    assert caught.value.extensions == {"code": "RATE_LIMITED", "retryAfter": 0.5, "limit": 2.0}
    limit.check(globex)  # other tenants are not affected
    clock.now += 0.5
    limit.check(acme)
    with pytest.raises(RateLimited):
        limit.check(acme)


def test_no_authentication_means_no_cap() -> None:
    limit = TenantRateLimit(1.0, clock=ManualClock())
    for _ in range(10):
        limit.check(UNAUTHENTICATED_OPERATOR)
