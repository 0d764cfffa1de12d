"""`Caller`: who sent a request, as authentication established it, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What a caller may do (OAuth 2 style scope names)."""

    #: Read the jobs of the caller's own tenant.
    READ = "jobs:read"
    #: Submit jobs, owned by the caller's tenant.
    SUBMIT = "jobs:submit"
    #: Read every job of the account, whoever submitted it (operators).
    READ_ALL = "jobs:read:all"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller; never holds the credential it proved itself with."""

    #: For logs and metrics: the token's subject or the API key's name.
    name: str
    #: The tenant the caller acts for; None for a caller with no tenant (operators, no auth).
    tenant: str | None
    scopes: frozenset[Scope]
    #: How the caller was authenticated: `jwt`, `api-key` or `none`.
    method: str
    #: When the credential stops being valid (Unix seconds), None when it does not expire.
    expires_at: float | None = None

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sees(self, owner: str | None) -> bool:
        """Whether a job owned by `owner` (None: submitted outside the gateway) is visible to
        this caller: its own tenant's jobs with `jobs:read`, every job with `jobs:read:all`."""
        if Scope.READ_ALL in self.scopes:
            return True
        return Scope.READ in self.scopes and owner is not None and owner == self.tenant


#: The caller of every request when authentication is off (`GATEWAY_AUTH=none`): it may do
#: everything, and jobs it submits carry no owner.
UNAUTHENTICATED_OPERATOR = Caller(
    name="anonymous", tenant=None, scopes=frozenset(Scope), method="none"
)
