"""JSON as clients send it (HTTP bodies, GET parameters, WebSocket frames), decoded with limits.

`decode` accepts UTF-8 text nested at most `MAX_DEPTH` deep and raises nothing but
`MalformedJson`, whose message says what was expected and what arrived: no `RecursionError`,
`UnicodeDecodeError` or other `ValueError` reaches the caller.
"""

from __future__ import annotations

import json
import re
import sys
from itertools import accumulate

#: The deepest nesting of arrays and objects a client may send. A request of this schema needs 3
#: (the request, its variables, a list of ids); Python's recursion limit, which decoding, the
#: coercion of variables and the encoding of answers all recurse against, is near 1,000. A
#: constant rather than a setting: it protects the process, it is not a policy to tune.
MAX_DEPTH = 32

# A JSON string, or an unterminated one up to the end: what the depth scan skips. The
# unrolled-loop form never backtracks, so the scan stays linear on any input.
_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?$)')
_BRACKETS_ONLY = bytes(byte for byte in range(256) if byte not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_STEP = {ord("["): 1, ord("]"): -1}


class MalformedJson(json.JSONDecodeError):
    """JSON the gateway will not decode. A `JSONDecodeError`, so that Strawberry's WebSocket
    adapter treats such a frame as the non-JSON frame it is (close code 4400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.message = message

    def __str__(self) -> str:
        return self.message


def decode(data: str | bytes) -> object:
    """The value JSON `data` holds; bytes must be UTF-8 (RFC 8259 allows nothing else)."""
    if isinstance(data, bytes):
        raw = data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedJson(
                f"Expected UTF-8 text, received byte 0x{data[exc.start]:02x} at position "
                f"{exc.start}, which is not UTF-8."
            ) from None
    else:
        text = data
        raw = data.encode("utf-8", "surrogatepass")
    depth = _depth_beyond(raw, MAX_DEPTH)
    if depth is not None:
        raise MalformedJson(
            f"Expected JSON nested at most {MAX_DEPTH} levels deep, received {depth} levels."
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedJson(
            f"Expected JSON, received text that does not parse: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}."
        ) from None
    except ValueError:
        # The one other ValueError json.loads raises: an integer too long to convert.
        raise MalformedJson(
            f"Expected JSON numbers of at most {sys.get_int_max_str_digits()} digits, received "
            "a longer one."
        ) from None


def describe(value: object) -> str:
    """What kind of JSON value `value` is, for a message: `null`, `a string`, `an array`..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _depth_beyond(data: bytes, limit: int) -> int | None:
    """How deep arrays and objects nest in JSON `data` (brackets inside strings do not count)
    when that is deeper than `limit`; None when it is not.

    It reads every body, so the work is done in C (count, regex, translate, accumulate): at
    most a few tens of milliseconds for the largest body accepted, about what decoding costs.
    Malformed JSON gets a bound, which is all the decoder's recursion needs.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return None
    structure = _STRING.sub(b"", data).translate(_ONE_KIND, _BRACKETS_ONLY)
    if structure.count(b"[") <= limit:
        return None
    deepest = max(accumulate(map(_STEP.__getitem__, structure)))
    return deepest if deepest > limit else None
