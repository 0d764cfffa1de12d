"""`percent_encode`: RFC 3986 percent-encoding, as both signers (MPS RPC and OSS V4) need it."""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["percent_encode"]

#: Text made only of unreserved characters, which encoding leaves as it is.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def percent_encode(text: str, safe: str = "") -> str:
    """UTF-8 `text` with every byte but the unreserved characters (letters, digits, `-._~`) and
    those in `safe` written `%XY` (upper-case hex); a space is `%20`, never `+`."""
    # Most of what the signers encode (names, ids, versions) needs nothing: a match is several
    # times cheaper than `quote`, and signing runs for every upstream call.
    if _UNRESERVED.fullmatch(text):
        return text
    return quote(text, safe=safe)
