"""Validation limits: linear in the document (each fragment walked once), counted as Strawberry's
limiters counted them, and refusing what graphql-core's overlap rule would take seconds on."""

from __future__ import annotations

import httpx
import pytest
from graphql import OperationDefinitionNode, parse, validate
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from gateway.api.limits import OVERLAP_BUDGET, DocumentShape
from gateway.api.schema import build_schema
from gateway.settings import GatewaySettings
from tests.api.conftest import GatewayServer, StartGateway, graphql


def fragment_bomb(levels: int, leaf: str = "__typename") -> str:
    """`levels` fragments, each spreading the previous one twice: 2^(levels-1) paths."""
    fragments = [f"fragment F0 on Query {{ {leaf} }}"] + [
        f"fragment F{n} on Query {{ ...F{n - 1} ...F{n - 1} }}" for n in range(1, levels)
    ]
    return f"query {{ ...F{levels - 1} }} " + " ".join(fragments)


def operations(query: str) -> list[OperationDefinitionNode]:
    return [d for d in parse(query).definitions if isinstance(d, OperationDefinitionNode)]


def test_each_fragment_of_a_bomb_is_walked_once() -> None:
    document = parse(fragment_bomb(40, leaf='a: job(id: "x") { result { files { key } } }'))
    shape = DocumentShape(document)

    measured = shape.of(document.definitions[0].selection_set)  # type: ignore[attr-defined]

    # 2^39 copies of one alias, 3 fields deep: counted, not walked.
    assert measured.depth == 3
    assert measured.aliases == 2**39
    assert shape.fragments.evaluations == 40


SHAPES = [
    "{ __typename }",
    '{ job(id: "a") { id } }',
    '{ a: job(id: "a") { id } b: job(id: "b") { result { files { key } } } }',
    '{ job(id: "a") { ...J } } fragment J on Job { x: id result { ...R } } '
    "fragment R on JobResult { files { key } }",
    '{ node(id: "a") { ... on Job { result { files { y: key } } } } }',
    "{ __schema { types { fields { type { name } } } } }",
    "query A { __typename } query B { a: __typename b: __typename }",
]


@pytest.mark.parametrize("query", SHAPES)
@pytest.mark.parametrize("limit", [0, 1, 2, 3])
def test_depth_and_aliases_are_counted_as_strawberrys_limiters_count_them(
    query: str, limit: int
) -> None:
    schema = build_schema(GatewaySettings())._schema
    document = parse(query)
    depth_rules = QueryDepthLimiter(max_depth=limit).validation_rules
    alias_rules = MaxAliasesLimiter(max_alias_count=limit).validation_rules
    shape = DocumentShape(document)
    ours = [shape.of(operation.selection_set) for operation in operations(query)]

    too_deep = [operation.depth > limit for operation in ours]
    theirs_too_deep = bool(validate(schema, document, depth_rules))
    assert any(too_deep) == theirs_too_deep
    assert (sum(operation.aliases for operation in ours) > limit) == bool(
        validate(schema, document, alias_rules)
    )


async def test_a_fragment_bomb_is_refused_as_too_complex(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = await graphql(http, gateway, fragment_bomb(40))

    # Depth 0, no alias: the bomb passes validation, and its cost (2^39 __typename) refuses it.
    assert body == {
        "data": None,
        "errors": [
            {
                "message": f"Expected an operation costing at most 100000, received one "
                f"costing {2**39}: ask for fewer ids, files or aliased fields, or split the "
                "operation.",
                "extensions": {"code": "QUERY_TOO_COMPLEX", "cost": 2**39, "limit": 100000},
            }
        ],
    }


async def test_too_deep_through_fragments_is_reported_at_the_field(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    query = (
        'query Deep { job(id: "a") { ...Result } } '
        "fragment Result on Job { result { ...Files } } "
        "fragment Files on JobResult { files { key } }"
    )
    with start_gateway(max_query_depth=2) as gateway:
        body = await graphql(http, gateway, query)

    key = query.index("key")
    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Expected operations nested at most 2 fields deep, received "
                "operation 'Deep' nested 3 deep.",
                "locations": [{"line": 1, "column": key + 1}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ],
    }


async def test_aliases_spread_twice_count_twice(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    query = "{ ...A ...A } fragment A on Query { a: __typename b: __typename }"
    with start_gateway(max_aliases=3) as gateway:
        body = await graphql(http, gateway, query)

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Expected at most 3 aliases in one document, received 4.",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ],
    }


async def test_500_fields_with_distinct_arguments_are_refused_within_the_overlap_budget(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # Each pair conflicts (same response name, other id): graphql-core would compare all
    # 124,750 pairs, for seconds; the budget stops it after OVERLAP_BUDGET steps.
    query = "{ " + " ".join(f'job(id: "job-{n}") {{ id }}' for n in range(500)) + " }"

    body = await graphql(http, gateway, query)

    conflicts = [e for e in body["errors"] if e["message"].startswith("Fields 'job' conflict")]
    budget = [e for e in body["errors"] if not e["message"].startswith("Fields 'job' conflict")]
    assert body["data"] is None
    assert budget == [
        {
            "message": "Expected fields that can be checked against each other in at most "
            f"{OVERLAP_BUDGET} steps, received a document that needs more: it selects the same "
            "response name too many times (select each field once, or give repeated fields "
            "distinct aliases).",
            "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
        }
    ]
    # The conflicts found before the budget ran out are reported too, each coded.
    assert all(e["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"} for e in conflicts)


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("{ }", {}),
        ('{ job(id: "no-such-job") { } }', {"job": None}),
        ("{ ...E } fragment E on Query { }", {}),
    ],
)
async def test_empty_selection_sets_are_answered(
    gateway: GatewayServer, http: httpx.AsyncClient, query: str, answer: dict[str, None]
) -> None:
    # Strawberry's depth limiter failed on them (max() of nothing): INTERNAL_ERROR.
    body = await graphql(http, gateway, query)

    assert body == {"data": answer}
