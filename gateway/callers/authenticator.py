"""`Authenticator`: who is asking, from a request's credentials, the same way for every
transport (HTTP headers, and a WebSocket's `connection_init` payload read as headers).

- `Authorization: Bearer <JWT>` with `jwt` in `GATEWAY_AUTH`;
- `Authorization: ApiKey <key>` or `x-api-key: <key>` with `api-key`;
- with `GATEWAY_AUTH=none`, every request is the unauthenticated operator, whatever it sends.

A request with no credential, or one the gateway refuses, is `Unauthenticated`; what it sent
is never repeated in the error or the log.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.callers.api_keys import ApiKeys
from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller
from gateway.callers.jwks import FileKeySource, KeySource, UrlKeySource
from gateway.callers.tokens import TokenVerifier
from gateway.errors import Unauthenticated
from gateway.settings import GatewaySettings

#: The realm named in `WWW-Authenticate` challenges.
REALM = "mps-gateway"


class Authenticator:
    """Turns credentials into a `Caller`; see the module docstring."""

    def __init__(
        self,
        *,
        tokens: TokenVerifier | None = None,
        api_keys: ApiKeys | None = None,
        keys: KeySource | None = None,
    ) -> None:
        self._tokens = tokens
        self._api_keys = api_keys
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Authenticator:
        """Reads the key set file or the API keys file now (a bad one raises ValueError, with
        a sentence naming the setting); a key set URL is fetched on first use."""
        methods = settings.auth_methods
        tokens: TokenVerifier | None = None
        api_keys: ApiKeys | None = None
        keys: KeySource | None = None
        if "jwt" in methods:
            assert settings.jwt_issuer is not None
            assert settings.jwt_audience is not None
            if settings.jwt_jwks_file is not None:
                source: KeySource = FileKeySource(settings.jwt_jwks_file)
            else:
                assert settings.jwt_jwks_url is not None
                source = UrlKeySource(
                    settings.jwt_jwks_url,
                    max_age=settings.jwt_jwks_max_age,
                    min_refresh=settings.jwt_jwks_min_refresh,
                    timeout=settings.connect_timeout + settings.read_timeout,
                )
            keys = source
            tokens = TokenVerifier(
                source,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                leeway=settings.jwt_leeway,
                scope_claim=settings.jwt_scope_claim,
                tenant_claim=settings.tenant_claim,
            )
        if "api-key" in methods:
            assert settings.api_keys_file is not None
            api_keys = ApiKeys.from_file(settings.api_keys_file)
        return cls(tokens=tokens, api_keys=api_keys, keys=keys)

    @property
    def enabled(self) -> bool:
        """False with `GATEWAY_AUTH=none`: every request is the unauthenticated operator."""
        return self._tokens is not None or self._api_keys is not None

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` header of a 401: one challenge per accepted scheme."""
        schemes = [
            *(["Bearer"] if self._tokens is not None else []),
            *(["ApiKey"] if self._api_keys is not None else []),
        ]
        return ", ".join(f'{scheme} realm="{REALM}"' for scheme in schemes)

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        """The caller whose credentials `headers` hold (names in lower case), or
        Unauthenticated."""
        if not self.enabled:
            return UNAUTHENTICATED_OPERATOR
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            scheme, credential = scheme.lower(), credential.strip()
            if scheme == "bearer" and self._tokens is not None:
                return await self._tokens.caller(credential)
            if scheme == "apikey" and self._api_keys is not None:
                return self._api_keys.caller(credential)
            raise Unauthenticated(
                f"expected an Authorization header with the scheme {self._schemes()}."
            )
        api_key = headers.get("x-api-key")
        if api_key is not None and self._api_keys is not None:
            return self._api_keys.caller(api_key.strip())
        raise Unauthenticated(f"no credential; send an Authorization header ({self._schemes()}).")

    def _schemes(self) -> str:
        schemes = [
            *(["Bearer <token>"] if self._tokens is not None else []),
            *(["ApiKey <key>"] if self._api_keys is not None else []),
        ]
        return " or ".join(schemes)

    async def aclose(self) -> None:
        if self._keys is not None:
            await self._keys.aclose()


def credential_headers(payload: Mapping[str, object]) -> dict[str, str]:
    """A WebSocket `connection_init` payload's credentials as headers: its string values under
    lower-case names (`{"Authorization": "Bearer ..."}` as GraphiQL and Apollo send it)."""
    return {
        name.lower(): value
        for name, value in payload.items()
        if isinstance(name, str) and isinstance(value, str)
    }
