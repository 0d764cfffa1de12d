"""How the gateway's log lines look, and `LogLimiter`, which keeps repeated warnings rare.

`configure_logging(level, fmt)` sends every record of the process (the gateway's, uvicorn's,
the libraries') to stderr, one line each: `text` (the default) or `json`, one JSON object a line
with `time`, `level`, `logger`, `message`, `request_id` (when the line was written while a
request was served), the fields a line carries (the access log's method, path, status...) and
`exception`. The standard library, not structlog: every logger here and in the libraries the
gateway runs (uvicorn, strawberry, httpx) is a standard one, so a formatter and a filter on one
handler reach them all, and the request id travels in a `contextvars` variable either way.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal

from gateway.observe.requests import current_request_id

__all__ = ["JsonFormatter", "LogLimiter", "RequestIdFilter", "TextFormatter", "configure_logging"]

LogFormat = Literal["text", "json"]

#: The text format: the request id in brackets ("-" outside a request).
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives each record the id of the request it was written for (`request_id`, None outside
    one); it filters nothing out."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    """The text line: `time level logger [request id] message`, then any traceback."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, never more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            document["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update((key, value) for key, value in fields.items() if key not in document)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Send every record at `level` or above to stderr in `fmt`, replacing the root logger's
    handlers (uvicorn's own loggers must be left to propagate: `log_config=None`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO: up to a hundred lines a second of upstream calls on
    # the hot path, which say nothing the metrics and /readyz do not.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


class LogLimiter:
    """Says that something happened at most once per `interval` seconds per kind, with how
    many times it happened since it was last said: a flood of one failure must not become a
    flood of log lines. Single-threaded (one event loop)."""

    def __init__(
        self, *, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._said_at: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def happened(self, kind: str, *, now: float | None = None) -> int | None:
        """Count one `kind` event (at `now` on the clock, by default the clock's now); the
        number of them since it was last said (this one included) when it is time to say it
        again, else None."""
        count = self._counts.get(kind, 0) + 1
        now = self._clock() if now is None else now
        said = self._said_at.get(kind)
        if said is not None and now - said < self._interval:
            self._counts[kind] = count
            return None
        self._said_at[kind] = now
        self._counts[kind] = 0
        return count
