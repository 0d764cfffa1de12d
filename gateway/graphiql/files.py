"""Serves GraphiQL's assets at `graphiql/<path>`.

Each path names its file's version, so a response is cached for a year as immutable, with a
strong ETag for revalidation (`If-None-Match` gets 304). A client that accepts gzip gets it,
compressed once per file and process, off the event loop (Starlette's GZipMiddleware would
compress a megabyte on the loop at every request).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from gateway.graphiql.assets import Asset
from gateway.http_errors import NOT_FOUND, ErrorResponse

IMMUTABLE = "public, max-age=31536000, immutable"


class AssetFiles:
    """The files of `assets` by path; `serve` is the Starlette endpoint."""

    def __init__(self, assets: Sequence[Asset]) -> None:
        self._assets = {asset.path: asset for asset in assets}
        self._gzipped: dict[str, bytes] = {}

    async def serve(self, request: Request) -> Response:
        asset = self._assets.get(request.path_params["path"])
        if asset is None:
            return ErrorResponse(404, "No GraphiQL file has this path.", NOT_FOUND)
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        # One entity per encoding, so one strong ETag each.
        etag = f'"{asset.integrity.removeprefix("sha384-")}{"-gzip" if gzipped else ""}"'
        headers = {
            "cache-control": IMMUTABLE,
            "etag": etag,
            "vary": "accept-encoding",
            "x-content-type-options": "nosniff",
        }
        if _matches(request.headers.get("if-none-match", ""), etag):
            return Response(status_code=304, headers=headers)
        content = asset.content
        if gzipped:
            content = await self._gzip(asset)
            headers["content-encoding"] = "gzip"
        return Response(content, media_type=asset.media_type, headers=headers)

    async def _gzip(self, asset: Asset) -> bytes:
        compressed = self._gzipped.get(asset.path)
        if compressed is None:
            # mtime=0: the same bytes every time, as the ETag promises.
            compressed = await asyncio.to_thread(gzip.compress, asset.content, 9, mtime=0)
            self._gzipped[asset.path] = compressed
        return compressed


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` lists gzip with a weight above 0."""
    for item in accept_encoding.split(","):
        coding, _, parameter = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        name, _, weight = parameter.partition("=")
        if name.strip().lower() != "q":
            return True
        try:
            return float(weight) > 0
        except ValueError:
            return False
    return False


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weakly, as RFC 9110 compares it) or is `*`."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags
