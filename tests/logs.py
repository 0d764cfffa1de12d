"""What a test may assert about the server's log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

#: Loggers of the tests' own clients, whose lines say nothing about the server.
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")


def warnings_and_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every server record at WARNING or above, or carrying a traceback, as a line to show.

    A client's mistake or departure is at most a DEBUG line; INFO lines are the server's own
    events (started, stopped).
    """
    return _lines(caplog, lambda record: record.levelno >= logging.WARNING or bool(record.exc_info))


def _lines(
    caplog: pytest.LogCaptureFixture, keep: Callable[[logging.LogRecord], bool]
) -> list[str]:
    return [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in caplog.records
        if keep(record) and not record.name.startswith(CLIENT_LOGGERS)
    ]
