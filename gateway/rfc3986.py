"""`percent_encode`: RFC 3986 percent-encoding, as both signers (MPS RPC and OSS V4) need it."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["percent_encode"]


def percent_encode(text: str, safe: str = "") -> str:
    """UTF-8 `text` with every byte but the unreserved characters (letters, digits, `-._~`) and
    those in `safe` written `%XY` (upper-case hex); a space is `%20`, never `+`."""
    return quote(text, safe=safe)
