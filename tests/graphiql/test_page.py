"""GraphiQL's page at /graphql: the gateway's own files only, and a useful first query."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import httpx

from gateway.graphiql.assets import sri
from gateway.graphiql.page import NEUTRAL_QUERY, demo_query, demo_subscription, render_page
from gateway.settings import SimulatorSettings
from gateway.simulator import demo_job_ids, moving_demo_job_id
from tests.graphiql.conftest import serve_gateway

BROWSER = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)


class Page(HTMLParser):
    """What a page loads (every src and href, with its integrity) and its JSON config block."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.loads: list[tuple[str, str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.config: dict[str, str] = {}
        self._in_config = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found)
            self._in_config = found.get("type") == "application/json"
        for name in ("src", "href"):
            if (value := found.get(name)) is not None:
                self.loads.append((tag, value, found.get("integrity")))

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.config = json.loads(data)
            self._in_config = False


async def get_page(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.get("/graphql", headers=BROWSER)
    assert response.status_code == 200
    return response


async def test_the_page_loads_only_the_gateway_s_files_each_with_its_hash(
    embedded_gateway: str,
) -> None:
    async with httpx.AsyncClient(base_url=embedded_gateway) as client:
        response = await get_page(client)
        page = Page(response.text)
        served = {url: await client.get(f"/{url}") for _, url, _ in page.loads[1:]}

    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-cache"
    assert "://" not in response.text  # no other origin, not even in a comment
    assert page.loads[0] == ("link", "data:,", None)  # the favicon, without a request
    loads = page.loads[1:]
    assert [tag for tag, _, _ in loads] == ["link"] * 3 + ["script"] * 5
    for _, url, integrity in loads:
        assert url.startswith("graphiql/")
        assert served[url].status_code == 200
        assert integrity == sri(served[url].content)
    # Scripts come from files only: the one inline block is data the browser never runs.
    inline = [script for script in page.scripts if "src" not in script]
    assert inline == [{"id": "graphiql-config", "type": "application/json"}]


async def test_on_the_embedded_simulator_graphiql_opens_with_demo_jobs_that_answer(
    embedded_gateway: str,
) -> None:
    async with httpx.AsyncClient(base_url=embedded_gateway) as client:
        query = Page((await get_page(client)).text).config["defaultQuery"]
        request = {"query": query, "operationName": "DemoJobs"}
        answer = (await client.post("/graphql", json=request)).json()

    simulator = SimulatorSettings()
    ids = demo_job_ids(simulator)[:3]
    assert "EMBEDDED MPS SIMULATOR" in query
    assert demo_query(ids, "DemoJobs") in query
    assert demo_subscription(moving_demo_job_id(simulator.seed), "MovingDemoJob") in query
    # The whole document was validated, the subscription too; the query answered.
    assert "errors" not in answer
    assert [job["id"] for job in answer["data"]["jobs"]] == ids


async def test_on_another_upstream_graphiql_opens_with_a_neutral_query() -> None:
    # An endpoint nobody listens on: the page costs no upstream call.
    with serve_gateway(mps_endpoint="http://127.0.0.1:9/") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            page = Page((await get_page(client)).text)

    assert page.config == {"defaultQuery": NEUTRAL_QUERY}


async def test_graphiql_turned_off_serves_neither_page_nor_files(embedded_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=embedded_gateway) as client:
        file = Page((await get_page(client)).text).loads[1][1]
    with serve_gateway(graphiql=False) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.get("/graphql", headers=BROWSER)
            files = await client.get(f"/{file}")

    assert page.status_code == 404
    assert files.status_code == 404


def test_a_query_cannot_close_the_config_block() -> None:
    query = '{ job(id: "</script><script>alert(1)</script>") { id } }'
    text = render_page([], query)

    assert text.count("</script>") == 1
    assert Page(text).config == {"defaultQuery": query}
