"""`LineHandler`: access lines gathered and written in batches, exactly as the formatters would
write their records, in order with every other line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from gateway.observe.logs import (
    JsonFormatter,
    LineHandler,
    LogFormat,
    RequestIdFilter,
    TextFormatter,
    access_json,
    access_text,
    configure_logging,
)
from gateway.observe.requests import (
    ACCESS_FORMAT,
    AccessLine,
    RequestObserver,
    access_logger,
    access_sink,
    printable_path,
)
from tests.support.waiting import SAFETY_TIMEOUT, eventually, wait_until

LINE = AccessLine(1_764_650_000.0456, "req-1", "POST", "/graphql", 200, 0.0034, "query Q")


@pytest.fixture
def handlers() -> Iterator[list[LineHandler]]:
    made: list[LineHandler] = []
    yield made
    for handler in made:
        handler.close()


def line_handler(made: list[LineHandler], fmt: LogFormat, interval: float = 60.0) -> LineHandler:
    handler = LineHandler(io.StringIO(), fmt, interval=interval, backstop=interval)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    made.append(handler)
    return handler


def written(handler: LineHandler) -> str:
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def as_record(line: AccessLine, formatter: logging.Formatter) -> str:
    """The line as a standard record of `gateway.access` formatted by `formatter`: what the
    gateway wrote before access lines were batched."""
    operation = line.operation or "-"
    path = printable_path(line.path)
    milliseconds = round(line.seconds * 1000, 1)
    record = access_logger.makeRecord(
        access_logger.name,
        logging.INFO,
        __file__,
        0,
        ACCESS_FORMAT,
        (line.method, path, line.status, milliseconds, operation),
        None,
        extra={
            "fields": {
                "method": line.method,
                "path": path,
                "status": line.status,
                "duration_ms": milliseconds,
                "operation": line.operation,
            },
            "request_id": line.request_id,
        },
    )
    record.created = line.created
    record.msecs = int((line.created - int(line.created)) * 1000) + 0.0
    return formatter.format(record)


#: Facts as odd as a request may make them: times on a second's edge, durations on a rounding
#: edge, paths too long or with characters that would break a line, names with quotes.
odd_facts = st.builds(
    AccessLine,
    created=st.one_of(
        st.floats(1_600_000_000, 2_000_000_000),
        st.integers(1_600_000_000, 2_000_000_000).map(lambda second: second + 0.9999996),
        st.integers(1_600_000_000, 2_000_000_000).map(lambda second: second + 0.0005),
    ),
    request_id=st.text(min_size=1, max_size=40),
    method=st.sampled_from(["GET", "POST", "OPTIONS", "WEBSOCKET"]),
    path=st.text(max_size=260),
    status=st.sampled_from([101, 200, 304, 400, 403, 413, 500, 503]),
    seconds=st.one_of(
        st.floats(0, 120), st.integers(0, 10**6).map(lambda tenths: (tenths + 0.5) / 10_000)
    ),
    operation=st.one_of(st.none(), st.text(max_size=70)),
)


@pytest.mark.parametrize("fmt", ["text", "json"])
@settings(max_examples=300, deadline=None)
@given(lines=st.lists(odd_facts, max_size=5))
def test_every_access_line_reads_exactly_as_the_formatter_writes_it(
    fmt: LogFormat, lines: list[AccessLine]
) -> None:
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    render = access_json if fmt == "json" else access_text
    assert render(lines) == "".join(as_record(line, formatter) + "\n" for line in lines)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_access_line_reads_as_the_formatter_writes_its_record(
    handlers: list[LineHandler], fmt: LogFormat
) -> None:
    handler = line_handler(handlers, fmt)
    handler.access(LINE)
    handler.access(LINE._replace(operation=None, status=413))
    handler.flush()

    lines = written(handler).splitlines()
    assert handler.formatter is not None
    assert lines == [
        as_record(LINE, handler.formatter),
        as_record(LINE._replace(operation=None, status=413), handler.formatter),
    ]
    if fmt == "json":
        assert json.loads(lines[0])["request_id"] == "req-1"


def test_access_lines_come_before_a_later_line_and_after_an_earlier_one(
    handlers: list[LineHandler],
) -> None:
    handler = line_handler(handlers, "text")
    logger = logging.getLogger("gateway.test.order")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("first")
        handler.access(LINE)
        logger.warning("second")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    messages = [line.split(" ", 5)[5] for line in written(handler).splitlines()]
    assert messages == ["first", "POST /graphql 200 3.4 ms query Q", "second"]


def test_lines_gathered_outside_a_loop_are_written_by_the_backstop_thread(
    handlers: list[LineHandler],
) -> None:
    handler = line_handler(handlers, "text", interval=0.01)
    handler.access(LINE)
    wait_until(lambda: "req-1" in written(handler), "the backstop thread's write")


async def test_lines_gathered_on_a_loop_are_written_by_its_timer(
    handlers: list[LineHandler],
) -> None:
    handler = LineHandler(io.StringIO(), "text", interval=0.01, backstop=3600.0)
    handlers.append(handler)
    handler.access(LINE)
    handler.access(LINE._replace(request_id="req-2"))
    await eventually(lambda: "req-2" in written(handler), "the loop timer's write")
    assert [line.split(" ")[4] for line in written(handler).splitlines()] == ["[req-1]", "[req-2]"]


def test_lines_gathered_after_a_loop_closed_with_its_timer_set_are_written_by_the_next(
    handlers: list[LineHandler],
) -> None:
    handler = LineHandler(io.StringIO(), "text", interval=0.01, backstop=3600.0)
    handlers.append(handler)

    async def gather() -> None:
        handler.access(LINE)  # its timer is set on this loop, which closes before it fires

    async def gather_on_another_loop() -> None:
        handler.access(LINE._replace(request_id="req-2"))
        await eventually(lambda: "req-2" in written(handler), "the second loop's timer's write")

    asyncio.run(gather())
    asyncio.run(gather_on_another_loop())
    assert [line.split(" ")[4] for line in written(handler).splitlines()] == ["[req-1]", "[req-2]"]


def test_a_closed_handler_may_be_closed_again_and_its_thread_ends() -> None:
    # `logging.shutdown` closes every handler again at exit; and `logging.Handler.close` sets
    # its own `_closed`, which the handler's thread must not take for its stop signal.
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        for _ in range(20):
            handler = LineHandler(io.StringIO(), "text", interval=0.0005, backstop=0.0005)
            for _ in range(20):
                handler.access(LINE)
            handler.close()
            handler.close()
            handler._flusher.join(SAFETY_TIMEOUT)
            assert not handler._flusher.is_alive()
    finally:
        threading.excepthook = hook
    assert errors == []


async def not_modified(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 304, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def no_more() -> Message:
    return {"type": "http.disconnect"}


async def discard(message: Message) -> None:
    pass


async def test_the_request_path_hands_the_line_over_when_the_gateway_configured_logging() -> None:
    configure_logging("INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, LineHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/graphql\nforged/" + "x" * 300,
        "headers": [(b"x-request-id", b"r")],
    }
    try:
        assert access_sink() == handler.access
        await RequestObserver(not_modified)(scope, no_more, discard)
        assert stream.getvalue() == ""  # gathered, not written yet
        handler.flush()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    written = stream.getvalue().split(" ", 2)[2]
    assert re.fullmatch(
        r"INFO gateway\.access \[r\] GET /graphql\?forged/x{184} 304 \d+\.\d ms -\n", written
    )
    assert access_sink() is None  # closed: lines are records again


def test_lines_still_gathered_at_exit_are_written() -> None:
    """A process that ends normally (as `serve` does after SIGTERM or Ctrl-C) writes every
    line it gathered, although no timer of its loop will ever write them: `logging.shutdown`
    (at exit) flushes the handler."""
    script = textwrap.dedent(
        """
        import asyncio, logging, sys
        from gateway.observe.logs import LineHandler
        from gateway.observe.requests import RequestObserver, set_access_sink
        from tests.observe.test_access_lines import discard, no_more, not_modified

        handler = LineHandler(sys.stderr, interval=3600.0, backstop=3600.0)
        logging.getLogger().addHandler(handler)
        set_access_sink(handler.access)
        observer = RequestObserver(not_modified)

        async def serve() -> None:
            for number in range(1000):
                scope = {"type": "http", "method": "GET", "path": f"/n/{number}", "headers": []}
                await observer(scope, no_more, discard)

        asyncio.run(serve())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT,
        cwd=Path(__file__).resolve().parents[2],  # the repository: `tests` imports from there
    )
    assert done.returncode == 0, done.stderr
    paths = [line.split(" ")[6] for line in done.stderr.splitlines()]
    assert paths == [f"/n/{number}" for number in range(1000)]


def test_above_info_no_line_is_gathered() -> None:
    level = logging.getLogger().level
    configure_logging("WARNING")
    handler = logging.getLogger().handlers[0]
    try:
        assert access_sink() is None
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        logging.getLogger().setLevel(level)
