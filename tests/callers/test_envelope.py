"""The ownership envelope in UserData: what the gateway writes, it reads back; nothing else is
mistaken for it."""

from __future__ import annotations

import json

import pytest

from gateway.callers.envelope import unwrap, wrap
from gateway.mps.decode import decode_job


@pytest.mark.parametrize("user_data", [None, "", "null", "plain text", '{"a":1}', "{", "é ✓"])
def test_what_is_wrapped_unwraps_to_the_tenant_and_the_callers_own_text(
    user_data: str | None,
) -> None:
    unwrapped = unwrap(wrap("acme", user_data))
    assert (unwrapped.owner, unwrapped.user_data) == ("acme", user_data)


def test_no_tenant_keeps_the_callers_text_as_it_is() -> None:
    assert wrap(None, '{"a":1}') == '{"a":1}'
    assert wrap(None, None) is None


def test_a_caller_cannot_claim_a_tenant_through_its_own_user_data() -> None:
    forged = wrap("mallory", None)
    unwrapped = unwrap(wrap("acme", forged))
    assert unwrapped.owner == "acme"
    assert unwrapped.user_data == forged


@pytest.mark.parametrize(
    "text",
    [
        None,
        "null",
        "not json",
        "{broken",
        "[1,2]",
        json.dumps({"mpsgw": 1, "tenant": "acme"}),  # a key missing
        json.dumps({"mpsgw": 1, "tenant": "acme", "userData": None, "extra": 1}),
        json.dumps({"mpsgw": 2, "tenant": "acme", "userData": None}),  # a version not known
        json.dumps({"mpsgw": 1, "tenant": "", "userData": None}),
        json.dumps({"mpsgw": 1, "tenant": 7, "userData": None}),
        json.dumps({"mpsgw": 1, "tenant": "acme", "userData": {"a": 1}}),
        "{" * 100_000,
    ],
)
def test_anything_else_is_the_callers_own_text_with_no_owner(text: str | None) -> None:
    unwrapped = unwrap(text)
    assert unwrapped.owner is None
    assert unwrapped.user_data == text


def test_a_decoded_job_shows_its_owner_and_the_callers_user_data() -> None:
    body = {
        "JobId": "j1",
        "State": "Success",
        "UserData": wrap("acme", '{"order":42}'),
    }
    job = decode_job(body, fetched_at=0.0, job_id=None)
    assert job is not None
    assert job.owner == "acme"
    assert job.user_data == '{"order":42}'
    # The raw body (what shared caches store) keeps the envelope, so a cache hit decodes the same.
    assert job.raw["UserData"] == body["UserData"]


def test_a_job_submitted_outside_the_gateway_has_no_owner() -> None:
    job = decode_job(
        {"JobId": "j1", "State": "Success", "UserData": "null"}, fetched_at=0.0, job_id=None
    )
    assert job is not None
    assert (job.owner, job.user_data) == (None, None)
