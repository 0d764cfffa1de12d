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

    @property
    def may_read(self) -> bool:
        """Whether the caller may read any job at all (`jobs:read` or `jobs:read:all`)."""
        return Scope.READ in self.scopes or Scope.READ_ALL in self.scopes

    @property
    def visibility(self) -> str:
        """Which jobs this caller sees, as a key: two callers with the same visibility get the
        same answer to the same document and variables (a response cache keys on it). `all`
        for `jobs:read:all`, `tenant:<tenant>` for a tenant's reader, `none` otherwise."""
        if Scope.READ_ALL in self.scopes:
            return "all"
        if Scope.READ in self.scopes and self.tenant is not None:
            return f"tenant:{self.tenant}"
        return "none"

    @property
    def fairness_key(self) -> tuple[str, str] | None:
        """The key this caller's upstream calls wait under in the budget's round-robin: its
        tenant (a tenant's callers share one turn, however many requests or ids they send), or
        for a caller with no tenant its own name; None for the unauthenticated operator, whose
        requests each get a turn of their own."""
        if self.method == "none":
            return None
        if self.tenant is not None:
            return ("tenant", self.tenant)
        return ("caller", f"{self.method}:{self.name}")

    def expired(self, now: float) -> bool:
        """Whether the credential has expired at `now` (Unix seconds)."""
        return self.expires_at is not None and now >= self.expires_at


#: The caller of a request whose credential is not known yet (a WebSocket before its
#: `connection_init`, GraphiQL's page): it may do nothing.
NOBODY = Caller(name="nobody", tenant=None, scopes=frozenset(), method="pending")

#: The caller of every request when authentication is off (`GATEWAY_AUTH=none`): it may do
#: everything, and jobs it submits carry no owner.
UNAUTHENTICATED_OPERATOR = Caller(
    name="anonymous", tenant=None, scopes=frozenset(Scope), method="none"
)
