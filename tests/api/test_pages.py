"""A result's files a page at a time: cursors and pages alone, then a job of 20,000 files walked
to its end through a real gateway, and the plain bounded list beside the connection."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import errors
from gateway.api.pages import Page, cursor_of, index_of
from gateway.simulator.jobs import success_result
from tests.api.conftest import GatewayServer, StartGateway, graphql
from tests.servers import SimulatorServer


def relay_cursor(index: int) -> str:
    """A cursor as graphql-relay-js writes it: what clients may have seen elsewhere."""
    return base64.b64encode(f"arrayconnection:{index}".encode()).decode()


# --- cursors and pages ------------------------------------------------------------------------


def test_a_cursor_is_relays_and_names_its_index() -> None:
    assert [cursor_of(index) for index in (0, 1, 19_999)] == [
        "YXJyYXljb25uZWN0aW9uOjA=",
        "YXJyYXljb25uZWN0aW9uOjE=",
        relay_cursor(19_999),
    ]
    assert [index_of(cursor_of(index)) for index in (0, 7, 19_999)] == [0, 7, 19_999]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "YXJyYXljb25uZWN0aW9uOjA",  # the padding cut off
        " YXJyYXljb25uZWN0aW9uOjA=",
        "YXJyYXljb25uZWN0aW9uOjA=\n",
        base64.b64encode(b"arrayconnection:-1").decode(),
        base64.b64encode(b"arrayconnection:01").decode(),
        base64.b64encode(b"arrayconnection:+1").decode(),
        base64.b64encode(b"arrayconnection: 1").decode(),
        base64.b64encode("arrayconnection:\u0661".encode()).decode(),  # an Arabic-Indic one
        base64.b64encode(b"arrayconnection:").decode(),
        base64.b64encode(b"Job:1").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "\udc80",
    ],
)
def test_only_a_cursor_written_here_names_an_index(text: str) -> None:
    assert index_of(text) is None


@pytest.mark.parametrize(
    ("total", "first", "after", "page"),
    [
        (5, None, None, Page(0, 3, 5)),  # no first: the maximum page size (3 here)
        (5, 2, None, Page(0, 2, 5)),
        (5, 2, cursor_of(1), Page(2, 4, 5)),
        (5, 3, cursor_of(3), Page(4, 5, 5)),
        (5, 0, cursor_of(1), Page(2, 2, 5)),
        (5, 2, cursor_of(4), Page(5, 5, 5)),  # after the last file: an empty page
        (5, 2, cursor_of(900), Page(5, 5, 5)),
        (0, None, None, Page(0, 0, 0)),
    ],
)
def test_what_first_and_after_select(
    total: int, first: int | None, after: str | None, page: Page
) -> None:
    assert Page.select(total, first=first, after=after, max_size=3) == page


def test_pages_say_what_lies_around_them() -> None:
    first, middle, last = Page(0, 2, 5), Page(2, 4, 5), Page(4, 5, 5)
    assert [(p.has_previous_page, p.has_next_page) for p in (first, middle, last)] == [
        (False, True),
        (True, True),
        (True, False),
    ]
    assert middle.cursors() == [relay_cursor(2), relay_cursor(3)]


@pytest.mark.parametrize(
    ("first", "after", "message"),
    [
        (4, None, "Expected first from 0 to 3 (the gateway's maximum page size), received 4."),
        (-1, None, "Expected first from 0 to 3 (the gateway's maximum page size), received -1."),
        (
            1,
            "x" * 500,
            "Expected after to be a cursor this list gave (an edge's cursor, or "
            f"pageInfo.endCursor), received '{'x' * 76}....",
        ),
    ],
)
def test_a_page_out_of_range_is_refused_even_of_an_empty_list(
    first: int, after: str | None, message: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        Page.select(0, first=first, after=after, max_size=3)
    assert raised.value.message == message
    assert raised.value.code == "INVALID_ARGUMENT"


# --- through a gateway ------------------------------------------------------------------------

BIG_JOB = "f11e5000000000000000000000000002"
FILES = 20_000
KEYS = [f"out/talk-{n:05d}.jpg" for n in range(FILES)]

WALK = """query Files($id: ID!, $after: String) {
  job(id: $id) { result { filesConnection(first: 100, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { key name contentType } }
    nodes { key }
  } } }
}"""


@pytest.fixture
def big_job(simulator: SimulatorServer) -> str:
    simulator.put_job(
        BIG_JOB,
        {
            "JobId": BIG_JOB,
            "FunctionName": "Cover",
            "State": "Success",
            "Input": "oss://demo.oss-cn-shanghai.aliyuncs.com/in/talk.mp4",
            "Output": "oss://demo.oss-cn-shanghai.aliyuncs.com/out/{source}-{sequenceId}.jpg",
            "Result": success_result(KEYS),
        },
    )
    return BIG_JOB


def expected_page(start: int, end: int) -> dict[str, Any]:
    """The whole answer to WALK for the files [start, end) of the big job."""
    indexes = range(start, end)
    edges = [
        {
            "cursor": relay_cursor(i),
            "node": {"key": KEYS[i], "name": KEYS[i][4:], "contentType": "image/jpeg"},
        }
        for i in indexes
    ]
    return {
        "data": {
            "job": {
                "result": {
                    "filesConnection": {
                        "totalCount": FILES,
                        "pageInfo": {
                            "hasNextPage": end < FILES,
                            "hasPreviousPage": start > 0,
                            "startCursor": relay_cursor(start) if edges else None,
                            "endCursor": relay_cursor(end - 1) if edges else None,
                        },
                        "edges": edges,
                        "nodes": [{"key": KEYS[i]} for i in indexes],
                    }
                }
            }
        }
    }


async def test_a_job_of_20000_files_is_walked_to_its_end_a_page_at_a_time(
    gateway: GatewayServer, http: httpx.AsyncClient, big_job: str
) -> None:
    pages = []
    after = None
    while True:
        body = await graphql(http, gateway, WALK, {"id": big_job, "after": after})
        pages.append(body)
        info = body["data"]["job"]["result"]["filesConnection"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    again = await graphql(http, gateway, WALK, {"id": big_job, "after": after})

    assert len(pages) == FILES // 100
    assert pages == [expected_page(start, start + 100) for start in range(0, FILES, 100)]
    # The last cursor given back: an empty page, nothing after it.
    last = await graphql(http, gateway, WALK, {"id": big_job, "after": relay_cursor(FILES - 1)})
    assert last == expected_page(FILES, FILES)
    # A cursor keeps naming the same file: the same page again.
    assert again == pages[-1]


async def test_no_answer_lists_more_than_a_page_of_files(
    start_gateway: StartGateway, http: httpx.AsyncClient, big_job: str
) -> None:
    query = """query Files($id: ID!, $first: Int) { job(id: $id) { result {
        files(first: $first) { key }
        filesConnection(first: $first) { totalCount nodes { key } } } } }"""

    def answer(files: int) -> dict[str, Any]:
        listed = [{"key": key} for key in KEYS[:files]]
        return {
            "data": {
                "job": {
                    "result": {
                        "files": listed,
                        "filesConnection": {"totalCount": FILES, "nodes": listed},
                    }
                }
            }
        }

    with start_gateway(max_page_size=5) as gateway:
        default = await graphql(http, gateway, query, {"id": big_job})
        null = await graphql(http, gateway, query, {"id": big_job, "first": None})
        three = await graphql(http, gateway, query, {"id": big_job, "first": 3})
        none = await graphql(http, gateway, query, {"id": big_job, "first": 0})
        over = [
            await graphql(http, gateway, f'{{ job(id: "{big_job}") {{ result {{ {field} }} }} }}')
            for field in ("files(first: 6) { key }", "filesConnection(first: 6) { totalCount }")
        ]

    assert default == null == answer(5)
    assert three == answer(3)
    assert none == answer(0)
    assert over == [
        {
            "data": {"job": {"result": None}},
            "errors": [
                {
                    "message": "Expected first from 0 to 5 (the gateway's maximum page size), "
                    "received 6.",
                    "locations": [{"line": 1, "column": 58}],
                    "path": ["job", "result", field],
                    "extensions": {"code": "INVALID_ARGUMENT", "argument": "first"},
                }
            ],
        }
        for field in ("files", "filesConnection")
    ]


async def test_the_readmes_files_query_is_answered_as_before(
    gateway: GatewayServer, http: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    job_id = simulator.demo_ids()[0]
    body = await graphql(
        http,
        gateway,
        "query($id: ID!) { job(id: $id) { result { code files { name contentType url } } } }",
        {"id": job_id},
    )
    base = "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/iproduction"
    assert body == {
        "data": {
            "job": {
                "result": {
                    "code": "Success",
                    "files": [
                        {
                            "name": "test-result.jpg",
                            "contentType": "image/jpeg",
                            "url": f"{base}/test-result.jpg",
                        },
                        {
                            "name": "test-origin.jpg",
                            "contentType": "image/jpeg",
                            "url": f"{base}/test-origin.jpg",
                        },
                    ],
                }
            }
        }
    }


def readme_example() -> tuple[str, dict[str, Any]]:
    """The query and the answer the README shows for the connection."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### A job's files, a page at a time", 1)[1]
    query = section.split("```graphql\n", 1)[1].split("```", 1)[0]
    answer = section.split("```json\n", 1)[1].split("```", 1)[0]
    return query, json.loads(answer)


async def test_the_readmes_connection_example_is_answered_as_shown(
    gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    query, shown = readme_example()
    first = await graphql(http, gateway, query)
    cursor = first["data"]["job"]["result"]["filesConnection"]["pageInfo"]["endCursor"]
    second = await graphql(http, gateway, query, {"after": cursor})

    assert first == shown
    base = "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/iproduction"
    assert second == {
        "data": {
            "job": {
                "result": {
                    "filesConnection": {
                        "totalCount": 2,
                        "pageInfo": {"hasNextPage": False, "endCursor": relay_cursor(1)},
                        "edges": [
                            {
                                "cursor": relay_cursor(1),
                                "node": {
                                    "name": "test-origin.jpg",
                                    "url": f"{base}/test-origin.jpg",
                                },
                            }
                        ],
                    }
                }
            }
        }
    }
