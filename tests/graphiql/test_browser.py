"""GraphiQL in a real browser that can reach nothing but the gateway.

Debian's chromium (never a browser Playwright downloads), driven by Playwright, against a real
gateway on the embedded simulator. Every request (HTTP or WebSocket) that is not to the gateway
is aborted and recorded; a test fails on any such request, on any failed request or HTTP error
answer, and on any console error (a Content-Security-Policy violation is one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    WebSocket,
    WebSocketRoute,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from gateway.settings import SimulatorSettings
from gateway.simulator.demo import DOC_EXAMPLE_JOB_ID, demo_job_ids
from tests.support.waiting import SAFETY_TIMEOUT, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds that only a hang takes (the page starts within a second or two here).
HANG = int(SAFETY_TIMEOUT * 1000)

QUERY_EDITOR = ".graphiql-query-editor"
RESULT = ".result-window"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"The browser tests need Debian's chromium at {CHROMIUM}: install it with "
            "`apt-get install -y chromium` (.ci/run does).",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=FLAGS, headless=True
        )
        yield browser
        browser.close()


@dataclass
class Traffic:
    """What the page asked for, as the browser saw it."""

    gateway: str
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    posts: list[Request] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"blocked {url}" for url in self.blocked] + self.failed + self.errors

    def route(self, route: Route) -> None:
        if route.request.url.startswith(f"{self.gateway}/"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def route_socket(self, socket: WebSocketRoute) -> None:
        if socket.url.startswith(self.gateway.replace("http", "ws", 1) + "/"):
            socket.connect_to_server()
        else:
            self.blocked.append(socket.url)
            socket.close()

    def watch(self, page: Page) -> None:
        page.on("requestfailed", lambda r: self.failed.append(f"failed {r.url}: {r.failure}"))
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", self._page_error)
        page.on("request", self._request)
        page.on("websocket", self._socket)

    def _page_error(self, error: PlaywrightError) -> None:
        self.errors.append(f"page error: {error}")

    def _request(self, request: Request) -> None:
        if request.method == "POST":
            self.posts.append(request)

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"HTTP {response.status} for {response.url}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def _socket(self, socket: WebSocket) -> None:
        self.sockets.append(socket.url)
        socket.on("framereceived", lambda frame: self.received.append(json.loads(frame)))


@contextmanager
def graphiql(browser: Browser, gateway: str) -> Iterator[tuple[Page, Traffic]]:
    """GraphiQL opened at `gateway`/graphql in a fresh profile, started and ready to type in."""
    traffic = Traffic(gateway)
    context = browser.new_context()
    context.set_default_timeout(HANG)
    context.route("**/*", traffic.route)
    context.route_web_socket(lambda url: True, traffic.route_socket)
    try:
        page = context.new_page()
        traffic.watch(page)
        page.goto(f"{gateway}/graphql")
        wait_for_graphiql(page, traffic)
        yield page, traffic
    finally:
        context.close()


def posted(request: Request) -> dict[str, Any]:
    """The JSON body GraphiQL posted."""
    body = request.post_data_json
    assert isinstance(body, dict), request.post_data
    return body


def wait_for_graphiql(page: Page, traffic: Traffic) -> None:
    try:
        page.wait_for_selector(f"{QUERY_EDITOR} .CodeMirror")
        return
    except PlaywrightError:
        pass
    problems = traffic.problems() or ["nothing failed"]
    pytest.fail(f"GraphiQL did not start within {HANG} ms: " + "; ".join(problems), pytrace=False)


def editor_text(page: Page, editor: str) -> str:
    text: str = page.eval_on_selector(f"{editor} .CodeMirror", "e => e.CodeMirror.getValue()")
    return text


def type_into(page: Page, editor: str, text: str) -> None:
    """Replaces what `editor` holds by typing `text`, key by key."""
    page.click(f"{editor} .CodeMirror-lines")
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("Delete")
    page.keyboard.type(text)
    # Typed as a person would: GraphiQL closes brackets and quotes, and typing them over skips
    # them, so the editor must hold exactly `text`.
    assert editor_text(page, editor) == text


def run_and_read_result(page: Page, marker: str) -> dict[str, Any]:
    """Runs the operation at once with Ctrl-Enter (before GraphiQL has read the edit: the page
    must send what the editor holds); returns the result pane's JSON once it holds `marker`."""
    page.keyboard.press("ControlOrMeta+Enter")
    expect(page.locator(RESULT)).to_contain_text(marker, timeout=HANG)
    result: dict[str, Any] = json.loads(editor_text(page, RESULT))
    return result


def test_a_query_with_an_authorization_header_runs_with_nothing_but_the_gateway(
    browser: Browser, embedded_gateway: str
) -> None:
    headers = '{"Authorization": "Bearer demo-token"}'
    query = f'{{ job(id: "{DOC_EXAMPLE_JOB_ID}") {{ id state functionName }} }}'
    with graphiql(browser, embedded_gateway) as (page, traffic):
        opened_with = editor_text(page, QUERY_EDITOR)
        page.get_by_role("button", name="Headers").click()
        type_into(page, HEADERS_EDITOR, headers)
        type_into(page, QUERY_EDITOR, query)
        result = run_and_read_result(page, '"functionName"')
        (sent,) = [post for post in traffic.posts if posted(post)["query"] == query]

        # The headers are kept for the next visit (GraphiQL stores them after a short pause).
        wait_until(
            lambda: page.evaluate("localStorage.getItem('graphiql:headers')") == headers,
            "GraphiQL storing the headers",
        )
        page.reload()
        wait_for_graphiql(page, traffic)
        page.get_by_role("button", name="Headers").click()
        kept = editor_text(page, HEADERS_EDITOR)

    ids = ", ".join(f'"{job_id}"' for job_id in demo_job_ids(SimulatorSettings())[:3])
    assert f"  jobs(ids: [{ids}]) {{\n" in opened_with
    assert result == {
        "data": {
            "job": {"id": DOC_EXAMPLE_JOB_ID, "state": "SUCCESS", "functionName": "ImageCartoonize"}
        }
    }
    assert sent.headers["authorization"] == "Bearer demo-token"
    assert kept == headers
    assert traffic.problems() == []


def test_a_subscription_in_graphiql_receives_job_updates_over_the_websocket(
    browser: Browser, embedded_gateway: str
) -> None:
    subscription = (
        f'subscription {{ jobUpdates(id: "{DOC_EXAMPLE_JOB_ID}") {{ id state isFinished }} }}'
    )
    with graphiql(browser, embedded_gateway) as (page, traffic):
        type_into(page, QUERY_EDITOR, subscription)
        result = run_and_read_result(page, '"isFinished"')

    event = {
        "data": {"jobUpdates": {"id": DOC_EXAMPLE_JOB_ID, "state": "SUCCESS", "isFinished": True}}
    }
    assert result == event
    assert traffic.sockets == [f"{embedded_gateway.replace('http', 'ws', 1)}/graphql"]
    assert [(m["type"], m.get("payload")) for m in traffic.received] == [
        ("connection_ack", None),
        ("next", event),
        ("complete", None),
    ]
    # Over HTTP, GraphiQL only read the schema.
    assert [posted(post)["operationName"] for post in traffic.posts] == ["IntrospectionQuery"]
    assert traffic.problems() == []
