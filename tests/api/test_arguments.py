"""Every argument the schema gives a range is refused outside it, at both ends, with
INVALID_ARGUMENT naming the argument, the range and the value received: nothing is clamped."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from graphql import GraphQLInterfaceType, GraphQLObjectType

from gateway.api.arguments import Range
from gateway.api.schema import build_schema
from gateway.errors import InvalidArgument
from gateway.settings import GatewaySettings
from tests.api.conftest import GatewayServer, graphql
from tests.api.test_subscriptions import graphql_ws, subscribe
from tests.servers import SimulatorServer

#: The documented example job: an OSS input and two result files.
JOB = "88c6ca184c0e432bbf5b665e2a15d0c1"

EXPIRES = "from 1 to 604800 seconds (7 days)"
PAGE = "from 0 to 100 (the gateway's maximum page size)"
CURSOR = "to be a cursor this list gave (an edge's cursor, or pageInfo.endCursor)"

#: (type, field, argument) -> where the field sits under job(id:), and a value of the argument
#: below and above its range ("after" has no numbers: a text that is no cursor, twice).
QUERIES: dict[tuple[str, str, str], tuple[str, list[str | int], str, tuple[str, str]]] = {
    ("ResultFile", "signedUrl", "expiresInSeconds"): (
        "result { files { signedUrl(expiresInSeconds: $value) } }",
        ["result", "files", 0, "signedUrl"],
        EXPIRES,
        ("0", "604801"),
    ),
    ("OssObject", "signedUrl", "expiresInSeconds"): (
        "input { signedUrl(expiresInSeconds: $value) }",
        ["input", "signedUrl"],
        EXPIRES,
        ("0", "604801"),
    ),
    ("JobResult", "files", "first"): (
        "result { files(first: $value) { key } }",
        ["result"],
        PAGE,
        ("-1", "101"),
    ),
    ("JobResult", "filesConnection", "first"): (
        "result { filesConnection(first: $value) { totalCount } }",
        ["result"],
        PAGE,
        ("-1", "101"),
    ),
    ("JobResult", "filesConnection", "after"): (
        "result { filesConnection(after: $value) { totalCount } }",
        ["result"],
        CURSOR,
        ('"not a cursor"', '"YXJyYXljb25uZWN0aW9uOjAx"'),  # "arrayconnection:01"
    ),
}
#: The subscription's argument, followed over WebSocket.
INTERVAL = ("Subscription", "jobUpdates", "intervalSeconds")


def documented_ranges() -> set[tuple[str, str, str]]:
    """Every argument whose description says it fails with INVALID_ARGUMENT."""
    schema = build_schema(GatewaySettings())._schema
    found = set()
    for type_name, graphql_type in schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
            continue
        for field_name, field in graphql_type.fields.items():
            for name, argument in field.args.items():
                description = argument.description or ""
                if "INVALID_ARGUMENT" in description:
                    found.add((type_name, field_name, name))
                elif re.search(r"\bfrom -?[\d.]+ to\b", description):
                    pytest.fail(f"{type_name}.{field_name}({name}) has a range, unchecked.")
    return found


def test_every_documented_range_is_tested_here() -> None:
    assert documented_ranges() == {*QUERIES, INTERVAL}


@pytest.mark.parametrize(("key", "end"), [(key, end) for key in QUERIES for end in (0, 1)], ids=str)
async def test_a_value_out_of_range_is_an_error_at_that_field(
    key: tuple[str, str, str],
    end: int,
    gateway: GatewayServer,
    http: httpx.AsyncClient,
    simulator: SimulatorServer,
) -> None:
    type_name, field_name, argument = key
    selection, path, expected, values = QUERIES[key]
    literal = values[end]
    graphql_type = "String" if argument == "after" else "Int"
    query = f'query($value: {graphql_type}) {{ job(id: "{JOB}") {{ {selection} }} }}'
    value: Any = literal.strip('"') if argument == "after" else int(literal)
    simulator.reset_stats()

    body = await graphql(http, gateway, query, {"value": value})

    shown = repr(value)
    error = {
        "message": f"Expected {argument} {expected}, received {shown}.",
        "locations": [{"line": 1, "column": query.index(field_name) + 1}],
        "path": ["job", *path],
        "extensions": {"code": "INVALID_ARGUMENT", "argument": argument},
    }
    if type_name == "ResultFile":
        # Each file's URL fails alone; the files are listed.
        assert body == {
            "data": {"job": {"result": {"files": [{"signedUrl": None}, {"signedUrl": None}]}}},
            "errors": [
                {**error, "path": ["job", "result", "files", index, "signedUrl"]}
                for index in (0, 1)
            ],
        }
    elif type_name == "OssObject":
        assert body == {"data": {"job": {"input": {"signedUrl": None}}}, "errors": [error]}
    else:
        # A non-null field of the result fails: the result is null, the job served.
        assert body == {
            "data": {"job": {"result": None}},
            "errors": [{**error, "path": ["job", "result", field_name]}],
        }


@pytest.mark.parametrize(("value", "shown"), [(0.49, "0.49"), (60.5, "60.5"), (0, "0.0")])
async def test_an_interval_out_of_range_ends_the_subscription_before_any_poll(
    value: float, shown: str, gateway: GatewayServer, simulator: SimulatorServer
) -> None:
    query = (
        "subscription($id: ID!, $every: Float!) { "
        "jobUpdates(id: $id, intervalSeconds: $every) { id } }"
    )
    async with graphql_ws(gateway) as socket:
        messages = await subscribe(socket, query, {"id": JOB, "every": value})

    assert messages == [
        {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {
                        "message": f"Expected intervalSeconds from 0.5 to 60 seconds, "
                        f"received {shown}.",
                        "extensions": {"code": "INVALID_ARGUMENT", "argument": "intervalSeconds"},
                    }
                ],
            },
        },
        {"id": "1", "type": "complete"},
    ]
    assert simulator.query_stats()["calls"] == 0


@pytest.mark.parametrize("value", [0.5, 60])
async def test_the_ends_of_the_interval_are_in_range(
    value: float, gateway: GatewayServer, simulator: SimulatorServer
) -> None:
    query = (
        'subscription($every: Float!) { jobUpdates(id: "'
        + JOB
        + '", intervalSeconds: $every) { id state } }'
    )
    async with graphql_ws(gateway) as socket:
        messages = await subscribe(socket, query, {"every": value})

    assert messages == [
        {
            "id": "1",
            "type": "next",
            "payload": {"data": {"jobUpdates": {"id": JOB, "state": "SUCCESS"}}},
        },
        {"id": "1", "type": "complete"},
    ]


def test_a_range_reads_as_the_schema_says_it() -> None:
    assert str(Range(1, 604800, unit="seconds", note="7 days")) == EXPIRES
    assert str(Range(0.5, 60.0, unit="seconds")) == "from 0.5 to 60 seconds"
    assert Range(0, 3).check("first", 3) == 3
    with pytest.raises(InvalidArgument, match=r"^Expected first from 0 to 3, received 4\.$"):
        Range(0, 3).check("first", 4)
