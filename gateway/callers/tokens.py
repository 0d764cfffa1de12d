"""`TokenVerifier`: a caller from a JWT bearer token, as an OIDC provider issues them.

PyJWT checks the signature and the registered claims; this module chooses what it checks with:
- the key is the one the token's `kid` names in the key set (`gateway.callers.jwks`), which
  holds asymmetric keys only;
- the one algorithm allowed is the key's own (declared by its `alg`, or implied by its type and
  curve), and the token's header must name it: `alg: none`, an HMAC token "signed" with a
  public key, or an RS256 token for an EC key are refused before any signature check;
- `iss` and `aud` must be the configured ones, `exp` must be present; `exp` and `nbf` are
  checked with a small leeway for clock differences.

Refusals are `Unauthenticated` errors whose reason is a fixed sentence: never the token, a
claim's value or a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from gateway.callers.caller import Caller, Scope
from gateway.callers.jwks import ALGORITHMS, KeySource
from gateway.errors import Unauthenticated

#: The longest token read: a few kilobytes is generous for any provider's access token.
MAX_TOKEN_LENGTH = 16 * 1024

_KNOWN_SCOPES = {scope.value: scope for scope in Scope}

# The first matching class names the reason (subclasses before their parents).
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "the token has expired."),
    (jwt_errors.ImmatureSignatureError, "the token is not valid yet (nbf or iat)."),
    (jwt_errors.InvalidIssuerError, "the token's issuer is not the one this gateway trusts."),
    (jwt_errors.InvalidAudienceError, "the token is not meant for this gateway (aud)."),
    (jwt_errors.MissingRequiredClaimError, "the token lacks a required claim (exp, iss, aud)."),
    (jwt_errors.InvalidSignatureError, "the token's signature does not verify."),
    (jwt_errors.InvalidAlgorithmError, "the token's algorithm is not its key's."),
    (jwt_errors.DecodeError, "the token is malformed."),
)


class TokenVerifier:
    """Checks bearer tokens against `keys`; see the module docstring."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: float,
        scope_claim: str = "scope",
        tenant_claim: str = "tenant",
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._scope_claim = scope_claim
        self._tenant_claim = tenant_claim

    async def caller(self, token: str) -> Caller:
        """The caller `token` proves, or Unauthenticated."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("the token is too long.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.DecodeError as exc:
            raise Unauthenticated("the token is malformed.") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            # `none`, HS256 and the like never reach a key.
            raise Unauthenticated(
                "the token's algorithm is not one this gateway accepts "
                f"({', '.join(sorted(ALGORITHMS))})."
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the token is malformed.")
        key = await self._keys.key(kid)
        if key is None:
            raise Unauthenticated("the token's key (kid) is not in the trusted key set.")
        if key.algorithm_name != algorithm:
            raise Unauthenticated("the token's algorithm is not its key's.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt_errors.PyJWTError as exc:
            raise Unauthenticated(_reason(exc)) from None
        return self._caller_of(claims)

    def _caller_of(self, claims: Mapping[str, Any]) -> Caller:
        name = next(
            (
                claims[claim]
                for claim in ("sub", "client_id", "azp")
                if isinstance(claims.get(claim), str) and claims[claim]
            ),
            "unnamed",
        )
        tenant = claims.get(self._tenant_claim)
        exp = claims.get("exp")
        return Caller(
            name=name[:128],
            tenant=tenant if isinstance(tenant, str) and tenant else None,
            scopes=_scopes(claims.get(self._scope_claim)),
            method="jwt",
            expires_at=float(exp) if isinstance(exp, int | float) else None,
        )


def _scopes(value: object) -> frozenset[Scope]:
    """The gateway's scopes among a claim's: a space-separated string (OAuth 2's `scope`) or a
    list (`scp`, `permissions`); others are ignored."""
    if isinstance(value, str):
        names: list[object] = list(value.split())
    elif isinstance(value, list):
        names = value
    else:
        return frozenset()
    return frozenset(
        _KNOWN_SCOPES[name] for name in names if isinstance(name, str) and name in _KNOWN_SCOPES
    )


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not valid."
