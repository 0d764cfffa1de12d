"""What a caller sees: its tenant's jobs with jobs:read, every job with jobs:read:all."""

from __future__ import annotations

from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller, Scope


def caller(tenant: str | None, *scopes: Scope) -> Caller:
    return Caller(name="c", tenant=tenant, scopes=frozenset(scopes), method="api-key")


def test_a_reader_sees_only_its_tenants_jobs() -> None:
    reader = caller("acme", Scope.READ)
    assert reader.sees("acme")
    assert not reader.sees("globex")
    assert not reader.sees(None)


def test_without_jobs_read_a_caller_sees_nothing() -> None:
    submitter = caller("acme", Scope.SUBMIT)
    assert not submitter.sees("acme")


def test_an_operator_sees_every_job() -> None:
    operator = caller(None, Scope.READ_ALL)
    assert operator.sees("acme")
    assert operator.sees(None)
    assert UNAUTHENTICATED_OPERATOR.sees("acme")
    assert UNAUTHENTICATED_OPERATOR.sees(None)


def test_a_reader_with_no_tenant_sees_no_owned_job_nor_unowned_one() -> None:
    assert not caller(None, Scope.READ).sees(None)


def test_visibility_names_what_a_caller_sees() -> None:
    assert caller("acme", Scope.READ).visibility == "tenant:acme"
    assert caller("acme", Scope.READ, Scope.READ_ALL).visibility == "all"
    assert caller(None, Scope.READ).visibility == "none"
    assert caller("acme", Scope.SUBMIT).visibility == "none"
    assert UNAUTHENTICATED_OPERATOR.visibility == "all"


def test_expiry() -> None:
    timed = Caller(name="c", tenant="t", scopes=frozenset(), method="jwt", expires_at=100.0)
    assert not timed.expired(99.9)
    assert timed.expired(100.0)
    assert not UNAUTHENTICATED_OPERATOR.expired(1e12)
