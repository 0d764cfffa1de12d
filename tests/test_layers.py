"""The package's layers, read from its imports: no cycles, and each layer knows only those below.

    api -> jobs -> budget -> shared        (and mps, model, errors, settings below them all)

A unit is a subpackage (`gateway.jobs`) or a top-level module (`gateway.app`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def unit_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(encoding="utf-8"))


def imported(tree: ast.Module, *, top_level_only: bool = False) -> Iterator[str]:
    """Every module `tree` imports (`from a import b` yields `a` and `a.b`)."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def unit_graph() -> dict[str, set[str]]:
    units = {unit_of(name) for name, _ in modules()}
    graph: dict[str, set[str]] = {unit: set() for unit in units}
    for name, tree in modules():
        for target in imported(tree):
            other = unit_of(target)
            if other in units and other != unit_of(name):
                graph[unit_of(name)].add(other)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_no_unit_imports_one_that_imports_it_back() -> None:
    graph = unit_graph()
    cycles = sorted(
        f"{unit} -> {other}"
        for unit, others in graph.items()
        for other in others
        if unit in reachable(graph, other)
    )
    assert cycles == []


@pytest.mark.parametrize(
    ("unit", "forbidden"),
    [
        # Resolvers never see HTTP to the upstream, nor the parts under the fetcher.
        ("gateway.api", {"httpx", "gateway.mps", "gateway.budget", "gateway.shared", "redis"}),
        # The budget knows nothing of jobs, GraphQL or the upstream.
        ("gateway.budget", {"gateway.jobs", "gateway.api", "gateway.mps", "gateway.app"}),
        ("gateway.shared", {"gateway.jobs", "gateway.api", "gateway.budget", "gateway.mps"}),
        # Where persisted documents are kept knows nothing of GraphQL requests or jobs.
        ("gateway.persisted", {"gateway.api", "gateway.jobs", "gateway.budget", "gateway.mps"}),
        # The client returns domain objects and knows nothing of how they are cached.
        ("gateway.mps", {"gateway.jobs", "gateway.api", "gateway.budget", "redis"}),
        ("gateway.model", {"gateway.jobs", "gateway.api", "gateway.mps", "httpx"}),
        # Metrics, logs and traces know nothing of what they watch: each layer declares its hook.
        (
            "gateway.observe",
            {
                *("gateway.api", "gateway.jobs", "gateway.budget", "gateway.mps"),
                *("gateway.shared", "gateway.services", "gateway.instruments", "gateway.app"),
            },
        ),
    ],
)
def test_a_layer_imports_nothing_above_it(unit: str, forbidden: set[str]) -> None:
    found = sorted(
        f"{name} imports {target}"
        for name, tree in modules()
        if unit_of(name) == unit
        for target in imported(tree)
        if any(target == bad or target.startswith(f"{bad}.") for bad in forbidden)
    )
    assert found == []


def test_the_simulator_is_imported_only_when_it_is_embedded() -> None:
    # A gateway on the cloud never loads the simulator: only `upstream` (inside the function
    # that embeds it) and the command line may import it.
    at_import_time = sorted(
        name
        for name, tree in modules()
        if unit_of(name) not in {"gateway.simulator", "gateway.__main__"}
        for target in imported(tree, top_level_only=True)
        if target.startswith("gateway.simulator")
    )
    assert at_import_time == []
