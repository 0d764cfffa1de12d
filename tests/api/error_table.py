"""The README's error table (`### Error codes`), read as the list of codes it documents, and what
a walk of it over one transport checks.

A walk is a table of its own: code -> how to provoke it over that transport (`Provocation`),
plus the codes that transport cannot meet, each with the test that provokes it elsewhere
(`Elsewhere`). `assert_walk_covers_the_table` fails when the README gains a row the walk does
not provoke, so a new code cannot go undocumented or untested. The HTTP walk is
`tests/api/test_error_table.py`, the WebSocket and SSE walk `tests/api/test_error_table_streams.py`
(which also checks the extra fields each row names).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADING = "### Error codes (`errors[].extensions.code`)"
_CODE = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def error_table(readme: Path = README) -> dict[str, tuple[list[str], bool]]:
    """Each code of the error table, in its order (a row may name several): the extra fields
    its row names, and whether they are conditional (the row says when they are there)."""
    text = readme.read_text(encoding="utf-8")
    section = text[text.index(TABLE_HEADING) :]
    rows: dict[str, tuple[list[str], bool]] = {}
    for line in section.splitlines()[4:]:
        if not line.startswith("| `"):
            break
        codes, _, extras = (cell.strip() for cell in line.strip("|").split(" | "))
        names = re.findall(r"`(\w+)`", extras)
        for code in _CODE.findall(codes):
            rows[code] = (names, " when " in extras)
    assert rows, f"no error table under {TABLE_HEADING!r} in {readme}"
    return rows


def readme_error_codes(readme: Path = README) -> list[str]:
    """Every code of the error table, in its order."""
    return list(error_table(readme))


@dataclass(frozen=True)
class Answer:
    """What a transport answered: an HTTP status (or None), its headers, and the GraphQL body
    (a response, or a WebSocket `error` payload wrapped as `{"errors": [...]}`)."""

    status: int | None
    headers: Mapping[str, str]
    body: dict[str, Any]

    def codes(self) -> list[str | None]:
        return [
            (error.get("extensions") or {}).get("code") for error in self.body.get("errors", [])
        ]


#: Provokes one code over one transport; the argument is the walk's fixtures.
Provocation = Callable[[Any], Awaitable[Answer]]


@dataclass(frozen=True)
class Elsewhere:
    """A code the walk's transport cannot meet (or only in a setup of its own), and the test,
    `module::function`, that provokes it."""

    test: str
    why: str

    def exists(self) -> bool:
        module, _, function = self.test.partition("::")
        return callable(getattr(importlib.import_module(module), function, None))


def assert_walk_covers_the_table(
    provoked: Collection[str], elsewhere: Mapping[str, Elsewhere]
) -> None:
    """Every code of the table is provoked by the walk or proven elsewhere, by a test that
    exists; and the walk provokes no code the table lacks."""
    documented = readme_error_codes()
    untested = [code for code in documented if code not in provoked and code not in elsewhere]
    assert untested == [], f"README error codes the walk does not provoke: {untested}"
    undocumented = sorted(set(provoked) - set(documented))
    assert undocumented == [], f"codes provoked but not in the README table: {undocumented}"
    missing = {code: place.test for code, place in elsewhere.items() if not place.exists()}
    assert missing == {}, f"tests named for codes proven elsewhere do not exist: {missing}"
