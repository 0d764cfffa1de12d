"""The cost limit: what operations cost, the limit's edge through a real gateway, variables read
before execution, and introspection kept cheap enough."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import strawberry
from graphql import OperationDefinitionNode, get_introspection_query, parse

from gateway.api.cost import CostModel
from gateway.api.schema import build_schema
from gateway.settings import GatewaySettings
from tests.api.conftest import GatewayServer, StartGateway, answer, graphql
from tests.servers import SimulatorServer

IDS = "query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id } }"
#: jobs(ids:) costs, per id, the lookup (10) and its `id` (1).
PER_ID = 11


def model(**settings: Any) -> CostModel:
    gateway = GatewaySettings(**settings)
    return CostModel(
        build_schema(gateway)._schema,
        limit=gateway.max_cost,
        max_ids=gateway.max_ids,
        max_page_size=gateway.max_page_size,
    )


def cost(query: str, variables: dict[str, Any] | None = None, **settings: Any) -> int:
    document = parse(query)
    (operation,) = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return model(**settings).measure(document, operation, variables).total


def test_fields_lists_and_weights() -> None:
    assert cost("{ __typename }") == 1
    assert cost('{ job(id: "a") { id state } }') == 10 + 2
    # A file: the object, its key, and its signed URL (10); a whole page of them (100) unless
    # `first` says fewer.
    assert cost('{ job(id: "a") { result { files { key signedUrl } } } }') == 10 + 1 + (
        100 * (1 + 1 + 10)
    )
    assert cost('{ job(id: "a") { result { files(first: 3) { key signedUrl } } } }') == 10 + 1 + (
        3 * (1 + 1 + 10)
    )
    assert cost('{ node(id: "a") { id ... on Job { state } } }') == 10 + 2


@pytest.mark.parametrize(
    ("query", "variables", "ids"),
    [
        ('{ jobs(ids: ["a", "b", "c"]) { id } }', None, 3),
        (IDS, {"ids": ["a"] * 7}, 7),
        (IDS, {"ids": "a"}, 1),  # one value where a list is expected: a list of one
        (IDS, {"ids": None}, 0),
        (IDS, {}, 100),  # not sent: as many as the field takes
        (IDS, {"ids": ["a"] * 5000}, 100),  # more fails with TOO_MANY_IDS, unrun
        ('query Jobs($ids: [ID!]! = ["a", "b"]) { jobs(ids: $ids) { id } }', {}, 2),
        ('query Jobs($one: ID!) { jobs(ids: [$one, "b"]) { id } }', {"one": "a"}, 2),
    ],
)
def test_jobs_cost_what_their_ids_hold(
    query: str, variables: dict[str, Any] | None, ids: int
) -> None:
    assert cost(query, variables) == ids * PER_ID


def test_each_fragment_is_costed_once() -> None:
    fragments = ["fragment F0 on Query { __typename }"] + [
        f"fragment F{n} on Query {{ ...F{n - 1} ...F{n - 1} }}" for n in range(1, 40)
    ]
    document = parse("query { ...F39 } " + " ".join(fragments))
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)

    measured = model().measure(document, operation)

    assert measured.total == 2**39
    assert measured.fragment_evaluations == 40


DASHBOARD = """query Page($ids: [ID!]!) { jobs(ids: $ids) {
    id state rawState isFinished functionName algorithm inputUrl outputTemplate pipelineId
    userData requestId fetchedAt ageSeconds params
    input { bucket endpoint region key name contentType isTemplate ossUrl url signedUrl }
    output { bucket endpoint region key name contentType isTemplate ossUrl url signedUrl }
    result { code message succeeded data
      files(first: 10) { key name contentType bucket region url ossUrl signedUrl } } } }"""

README_QUERIES = [
    """query {
      job(id: "88c6ca184c0e432bbf5b665e2a15d0c1") {
        id state functionName params userData
        result { code files { name contentType url } }
        fetchedAt requestId
      }
    }""",
    """subscription {
      jobUpdates(id: "88c6ca184c0e432bbf5b665e2a15d0c1", intervalSeconds: 2) {
        id state isFinished result { code files { name signedUrl } }
      }
    }""",
    # GraphiQL's introspection query, with every option it may turn on.
    get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    ),
    # A dashboard: a full page of jobs, with every field and signed URLs of their first files.
    DASHBOARD,
    # Relay's pagination query of one job's files (usePaginationFragment), a whole page.
    """query FilesPage($id: ID!, $count: Int = 100, $cursor: String) { job(id: $id) { result {
        filesConnection(first: $count, after: $cursor) {
          totalCount pageInfo { hasNextPage endCursor }
          edges { cursor node { key name contentType url signedUrl } } } } } }""",
]


@pytest.mark.parametrize("query", README_QUERIES)
def test_realistic_operations_leave_room_under_the_default_limit(query: str) -> None:
    # Introspection, the costliest, grows with the schema (its lists count as this schema's
    # longest): 71,000 with submitJob's input type (its input fields are counted for every
    # type), still far enough under the limit that two introspections are refused.
    assert cost(query, {"ids": ["a"] * 100, "id": "a"}) <= GatewaySettings().max_cost * 0.75


def test_two_introspections_in_one_document_are_over_the_default_limit() -> None:
    introspection = README_QUERIES[2]
    assert 2 * cost(introspection) > GatewaySettings().max_cost


def test_a_dashboard_that_asks_for_every_file_of_every_job_is_over_the_limit() -> None:
    # Each of the 100 jobs may list a whole page of files, each with a signed URL.
    every_file = DASHBOARD.replace("files(first: 10)", "files")

    assert cost(every_file, {"ids": ["a"] * 100}) > GatewaySettings().max_cost


#: A page of files: the connection (1), totalCount (1), pageInfo (1 + 1), and per file an edge
#: (1), its cursor (1), its node (1) and key (1), and the same node (1) and key (1) in `nodes`.
PAGE = (
    "filesConnection{first} {{ totalCount pageInfo {{ hasNextPage }} "
    "edges {{ cursor node {{ key }} }} nodes {{ key }} }}"
)


def page_cost(files: int) -> int:
    return 10 + 1 + (1 + 1 + 2 + files * 4 + files * 2)


@pytest.mark.parametrize(
    ("query", "variables", "files"),
    [
        (f'{{ job(id: "a") {{ result {{ {PAGE.format(first="(first: 5)")} }} }} }}', None, 5),
        (f'{{ job(id: "a") {{ result {{ {PAGE.format(first="")} }} }} }}', None, 100),
        (
            'query($n: Int) { job(id: "a") { result { '
            + PAGE.format(first="(first: $n, after: null)")
            + " } } }",
            {"n": 7},
            7,
        ),
        (
            'query($n: Int = 3) { job(id: "a") { result { '
            + PAGE.format(first="(first: $n)")
            + " } } }",
            {},
            3,
        ),
        (
            'query($n: Int) { job(id: "a") { result { '
            + PAGE.format(first="(first: $n)")
            + " } } }",
            {"n": None},
            100,
        ),
        # Out of range: refused by execution with INVALID_ARGUMENT, costed as a whole page.
        (f'{{ job(id: "a") {{ result {{ {PAGE.format(first="(first: 5000)")} }} }} }}', None, 100),
        (f'{{ job(id: "a") {{ result {{ {PAGE.format(first="(first: -1)")} }} }} }}', None, 100),
    ],
)
def test_a_page_of_files_costs_what_first_asks_for(
    query: str, variables: dict[str, Any] | None, files: int
) -> None:
    assert cost(query, variables) == page_cost(files)


def test_a_fragment_on_the_connection_costs_a_whole_page() -> None:
    # The fragment is costed once, without the field it is spread under: an upper bound.
    query = (
        'query { job(id: "a") { result { filesConnection(first: 5) { ...Page } } } } '
        "fragment Page on ResultFileConnection { totalCount pageInfo { hasNextPage } "
        "edges { cursor node { key } } nodes { key } }"
    )
    assert cost(query) == page_cost(100)
    inline = (
        PAGE.format(first="(first: 5)").replace(
            "{ totalCount", "{ ... on ResultFileConnection { totalCount"
        )
        + " }"
    )
    assert cost(f'{{ job(id: "a") {{ result {{ {inline} }} }} }}') == page_cost(5)


def test_a_list_field_without_a_size_is_refused_at_start() -> None:
    @strawberry.type
    class Query:
        tags: list[str]

    with pytest.raises(ValueError, match=r"Expected a size for every list field, none for"):
        CostModel(strawberry.Schema(query=Query)._schema, limit=10, max_ids=10, max_page_size=10)


async def test_the_limit_through_a_gateway(
    simulator: SimulatorServer, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    known = simulator.demo_ids()[0]
    with start_gateway(max_cost=10 * PER_ID) as gateway:
        below = await graphql(http, gateway, IDS, {"ids": [known] * 9})
        at = await graphql(http, gateway, IDS, {"ids": [known] * 10})
        simulator.reset_stats()
        over = await graphql(http, gateway, IDS, {"ids": [known] * 11})
        calls = simulator.query_stats()["calls"]

    assert below == {"data": {"jobs": [{"id": known}] * 9}}
    assert at == {"data": {"jobs": [{"id": known}] * 10}}
    assert over == {
        "data": None,
        "errors": [
            {
                "message": "Expected an operation costing at most 110, received one costing "
                "121: ask for fewer ids, files or aliased fields, or split the operation.",
                "extensions": {"code": "QUERY_TOO_COMPLEX", "cost": 121, "limit": 110},
            }
        ],
    }
    assert calls == 0  # refused before execution


async def test_the_operation_chosen_by_name_is_the_one_costed(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    query = (
        'query Small { __typename } query Big { jobs(ids: ["a", "b"]) { id } } '
        'subscription Follow { jobUpdates(id: "a") { id } }'
    )
    with start_gateway(max_cost=5) as gateway:
        small = await http.post(
            gateway.graphql_url, json={"query": query, "operationName": "Small"}
        )
        big = await http.post(gateway.graphql_url, json={"query": query, "operationName": "Big"})

    assert small.json() == {"data": {"__typename": "Query"}}
    assert answer(big)["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "cost": 2 * PER_ID,
        "limit": 5,
    }


async def test_graphiql_introspection_is_answered(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = await graphql(http, gateway, README_QUERIES[2])

    assert "errors" not in body
    names = {entry["name"] for entry in body["data"]["__schema"]["types"]}
    assert {"Query", "Job", "JobResult", "ResultFile", "__Schema"} <= names
