"""API keys: the file of hashes, constant-time lookup, and `python -m gateway hash-api-key`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.callers.api_keys import ApiKeys, ApiKeysFileError, key_hash, new_key
from gateway.callers.caller import Caller, Scope
from gateway.errors import Unauthenticated


def entry(key: str, name: str = "billing", **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tenant": "acme",
        "scopes": ["jobs:read", "jobs:submit"],
        "sha256": key_hash(key),
        **overrides,
    }


def test_a_key_is_its_entrys_caller() -> None:
    billing, ops = new_key(), new_key()
    keys = ApiKeys.from_document(
        {"keys": [entry(billing), entry(ops, "ops", tenant=None, scopes=["jobs:read:all"])]}
    )
    assert keys.caller(billing) == Caller(
        name="billing",
        tenant="acme",
        scopes=frozenset({Scope.READ, Scope.SUBMIT}),
        method="api-key",
    )
    assert keys.caller(ops).scopes == frozenset({Scope.READ_ALL})


@pytest.mark.parametrize("presented", ["", "mpsgw_wrong", "x" * 1000])
def test_an_unknown_key_is_refused_without_repeating_it(presented: str) -> None:
    keys = ApiKeys.from_document({"keys": [entry(new_key())]})
    with pytest.raises(Unauthenticated) as caught:
        keys.caller(presented)
    assert (
        caught.value.message == "Authentication failed: the API key is not one this gateway knows."
    )


def test_new_keys_are_long_random_and_recognizable() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("mpsgw_") and len(key) >= 49 for key in keys)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "an object with a keys list"),
        ({"keys": [1]}, "entry 0 of GATEWAY_API_KEYS_FILE to be an object"),
        ({"keys": [{"tenant": "a", "scopes": [], "sha256": "0" * 64}]}, "to have a name"),
        ({"keys": [entry("k", scopes=["jobs:write"])]}, "to have scopes among"),
        ({"keys": [entry("k", sha256="abc")]}, "sha256 of 64 hex digits"),
        ({"keys": [entry("k", sha256="z" * 64)]}, "sha256 of 64 hex digits"),
        ({"keys": [entry("k", tenant="")]}, "tenant that is a non-empty string"),
        ({"keys": [entry("k"), entry("k", "other")]}, "entry 1 repeats a name or a key"),
        ({"keys": [entry("k"), entry("j")]}, "entry 1 repeats a name or a key"),
    ],
)
def test_a_bad_file_is_refused_in_one_sentence_without_hashes(
    document: object, problem: str
) -> None:
    with pytest.raises(ApiKeysFileError) as caught:
        ApiKeys.from_document(document)
    assert problem in str(caught.value)
    assert key_hash("k") not in str(caught.value)


def test_the_file_is_read(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [entry(key)]}))
    assert ApiKeys.from_file(str(path)).caller(key).name == "billing"
    with pytest.raises(ApiKeysFileError, match="readable file"):
        ApiKeys.from_file(str(tmp_path / "missing.json"))
    path.write_text("{not json")
    with pytest.raises(ApiKeysFileError, match="to hold JSON"):
        ApiKeys.from_file(str(path))


def test_the_cli_makes_a_key_whose_entry_the_gateway_accepts() -> None:
    command = [sys.executable, "-m", "gateway", "hash-api-key", "--name", "billing"]
    done = subprocess.run(
        [*command, "--tenant", "acme", "--scope", "jobs:read", "--scope", "jobs:submit"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key, line = done.stdout.splitlines()
    made = json.loads(line)
    assert made == {
        "name": "billing",
        "tenant": "acme",
        "scopes": ["jobs:read", "jobs:submit"],
        "sha256": key_hash(key),
    }
    assert ApiKeys.from_document({"keys": [made]}).caller(key).tenant == "acme"
    # A key of one's own, from stdin: only the entry is printed.
    own = subprocess.run(
        [*command, "--stdin"], input="mpsgw_mine\n", capture_output=True, text=True, check=True
    )
    assert json.loads(own.stdout)["sha256"] == key_hash("mpsgw_mine")
    assert "mpsgw_mine" not in own.stdout
