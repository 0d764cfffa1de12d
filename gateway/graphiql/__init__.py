"""GraphiQL, served by the gateway with nothing loaded from anywhere else.

The page (at `/graphql`, for a browser) loads only files this package ships (`vendor/`: npm
files pinned in `assets.json`; `start.js` and `page.css`: the gateway's own), served at
`/graphiql/<path>` with their SRI hashes, under a Content-Security-Policy that allows no other
origin. GraphiQL opens with the embedded simulator's demo jobs when the gateway runs on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.graphiql.assets import Asset, load_assets
from gateway.graphiql.files import AssetFiles
from gateway.graphiql.page import ASSET_PREFIX, CONTENT_SECURITY_POLICY, default_query, render_page
from gateway.settings import GatewaySettings

__all__ = ["FILES_ROUTE", "GraphiQL"]

#: The route of the page's files (the page, at `/graphql`, names them relative to itself).
FILES_ROUTE = f"/{ASSET_PREFIX}{{path:path}}"


class GraphiQL:
    """The page and the files it loads."""

    def __init__(self, assets: Sequence[Asset], query: str) -> None:
        self._html = render_page(assets, query)
        self._files = AssetFiles(assets)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GraphiQL:
        """GraphiQL as `settings` want it (its first query depends on the upstream). Raises
        `AssetMismatch` when a shipped file does not match its pinned hash."""
        return cls(load_assets(), default_query(settings))

    def page(self) -> Response:
        return HTMLResponse(
            self._html,
            headers={
                "content-security-policy": CONTENT_SECURITY_POLICY,
                # The page names the files of this gateway's version: always ask for it again.
                "cache-control": "no-cache",
                "x-content-type-options": "nosniff",
            },
        )

    async def file(self, request: Request) -> Response:
        """The endpoint of `FILES_ROUTE`."""
        return await self._files.serve(request)
