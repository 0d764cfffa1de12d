"""The gateway's envelope in a job's UserData: the tenant that submitted the job through the
gateway, recorded in the upstream job itself so that ownership survives restarts and needs no
database.

UserData is the one free-form field a job carries from submission into every query answer. A job
submitted for a tenant carries `{"mpsgw":1,"tenant":"<tenant>","userData":<the caller's text or
null>}`; the caller's own user data is kept inside, unchanged, and is what the API shows. A
UserData that is not exactly such an object (a job submitted outside the gateway, or by a caller
with no tenant) is the caller's own text, and the job has no owner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MARKER = "mpsgw"
VERSION = 1
_KEYS = frozenset({MARKER, "tenant", "userData"})


@dataclass(frozen=True, slots=True)
class Unwrapped:
    #: The tenant that submitted the job through the gateway; None when no envelope.
    owner: str | None
    #: The caller's own user data, as it gave it.
    user_data: str | None


def wrap(tenant: str | None, user_data: str | None) -> str | None:
    """The UserData to submit for `tenant` with the caller's `user_data`; a submission with no
    tenant keeps the caller's text as it is."""
    if tenant is None:
        return user_data
    return json.dumps(
        {MARKER: VERSION, "tenant": tenant, "userData": user_data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def unwrap(user_data: str | None) -> Unwrapped:
    """The owner and the caller's own user data of a job's UserData (as decoded: None for none)."""
    if user_data is None or not user_data.startswith("{"):
        return Unwrapped(owner=None, user_data=user_data)
    try:
        value = json.loads(user_data)
    except (ValueError, RecursionError):
        return Unwrapped(owner=None, user_data=user_data)
    if (
        not isinstance(value, dict)
        or value.keys() != _KEYS
        or value[MARKER] != VERSION
        or not isinstance(value["tenant"], str)
        or not value["tenant"]
        or not isinstance(value["userData"], str | None)
    ):
        return Unwrapped(owner=None, user_data=user_data)
    return Unwrapped(owner=value["tenant"], user_data=value["userData"])
