"""`caller_visibility`: callers share kept answers only when they see the same jobs."""

from __future__ import annotations

from gateway.answers.http import caller_visibility
from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller, Scope


def caller(tenant: str | None, *scopes: Scope) -> Caller:
    return Caller(name="n", tenant=tenant, scopes=frozenset(scopes), method="jwt")


def test_without_authentication_everyone_sees_the_same_public_answers() -> None:
    assert caller_visibility(UNAUTHENTICATED_OPERATOR) == ("all", False)


def test_callers_of_one_tenant_share_and_others_do_not() -> None:
    a1 = caller_visibility(caller("a", Scope.READ))
    a2 = caller_visibility(caller("a", Scope.READ, Scope.SUBMIT))
    b = caller_visibility(caller("b", Scope.READ))
    operator = caller_visibility(caller("a", Scope.READ_ALL))
    blind = caller_visibility(caller("a", Scope.SUBMIT))
    assert a1 == a2 == ("tenant:a", True)
    assert len({a1, b, operator, blind, ("all", False)}) == 5
    assert all(private for _, private in (b, operator, blind))
