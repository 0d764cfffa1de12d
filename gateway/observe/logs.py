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

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

from gateway.observe.requests import (
    ACCESS_FORMAT,
    AccessLine,
    access_logger,
    access_sink,
    current_request_id,
    set_access_sink,
)

__all__ = [
    "JsonFormatter",
    "LineHandler",
    "LogLimiter",
    "RequestIdFilter",
    "TextFormatter",
    "configure_logging",
]

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


class LineHandler(logging.StreamHandler[TextIO]):
    """The gateway's one handler: every record written at once, as a standard StreamHandler
    does, but access lines (`AccessLine`s from `RequestObserver`) gathered and written in
    batches: no record, no formatter call, no write and flush per request, which made the
    access log cost a sizeable share of a kept answer. The request's path only appends the
    line's facts; what gathered is rendered and written in one write `interval` seconds after
    the first of them, by a timer of the event loop that gathered it (in that thread: a
    writer thread measured dearer, the interpreter's lock passing between the two), as it is
    before any other record is written (so lines stay in the order they happened), at a flush
    or close (at exit), by the request that brings the gathered lines to `most`, and, for
    lines gathered outside an event loop, by a daemon thread every `backstop` seconds. A
    process killed outright loses at most `interval` seconds of access lines.

    Each access line reads exactly as the formatter would write the record `gateway.access`
    makes of it (`access_text`, `access_json`).
    """

    def __init__(
        self,
        stream: TextIO,
        fmt: LogFormat = "text",
        *,
        interval: float = 0.05,
        most: int = 8192,
        backstop: float = 1.0,
    ) -> None:
        super().__init__(stream)
        self._json = fmt == "json"
        self._most = most
        self._pending: list[AccessLine] = []
        self._clock = _SecondsCache()
        self._interval = interval
        #: The loop whose timer will write what gathered, while one is set (None when none is).
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # Not `_closed`: `logging.Handler.close` sets that one to True, which would leave the
        # flusher thread calling `True.wait` (an exception in a thread) after a close.
        self._stopping = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(backstop,), name="access-log", daemon=True
        )
        self._flusher.start()

    def access(self, line: AccessLine) -> None:
        """Take one access line (under the lock: the flusher thread takes the list away)."""
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            timer_loop = self._timer_loop
            # A timer set on a loop that has closed since will never fire: set another.
            if timer_loop is None or timer_loop.is_closed():
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None  # the backstop thread writes it
                if loop is not None:
                    self._timer_loop = loop
                    loop.call_later(self._interval, self._write_timed, loop)
            if len(self._pending) < self._most:
                return
            # The writer thread is not keeping up (a stalled stream): write here, so that the
            # lines waiting stay bounded.
            self._write_pending()
            self.stream.flush()

    def _write_timed(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer_loop is loop:  # not a later timer, set after this loop closed
                self._timer_loop = None
            self._write_pending()
            self.stream.flush()

    def write_access(self) -> None:
        """Write the access lines gathered so far, in one write."""
        with self.lock:  # type: ignore[union-attr]  # made by createLock, never None here
            self._write_pending()
            self.stream.flush()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        render = self._json_line if self._json else self._text_line
        self.stream.write("".join([render(line) for line in lines]))

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().flush()

    def close(self) -> None:
        if access_sink() == self.access:
            set_access_sink(None)  # access lines are records again, for whoever handles them
        self._stopping.set()
        self.flush()
        super().close()

    def _flush_every(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            if self._pending:
                try:
                    self.write_access()
                except Exception:  # a closed stream at exit: nothing to write to
                    return

    def _text_line(self, line: AccessLine) -> str:
        return f"{self._clock.asctime(line.created)} {access_text(line)}\n"

    def _json_line(self, line: AccessLine) -> str:
        return access_json(line) + "\n"


def access_text(line: AccessLine) -> str:
    """An access line as `TextFormatter` writes it, but for its time."""
    return f"INFO {access_logger.name} [{line.request_id}] {_access_message(line)}"


def access_json(line: AccessLine) -> str:
    """An access line as `JsonFormatter` writes the record `RequestObserver` would make."""
    document: dict[str, object] = {
        "time": datetime.fromtimestamp(line.created, UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": access_logger.name,
        "message": _access_message(line),
        "request_id": line.request_id,
        "method": line.method,
        "path": line.path,
        "status": line.status,
        "duration_ms": line.duration_ms,
        "operation": line.operation,
    }
    return json.dumps(document, ensure_ascii=False, default=str)


def _access_message(line: AccessLine) -> str:
    return ACCESS_FORMAT % (
        line.method,
        line.path,
        line.status,
        line.duration_ms,
        line.operation or "-",
    )


class _SecondsCache:
    """`logging.Formatter.formatTime`'s default text (local time, `,` and milliseconds), with
    the part that changes once a second made once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def asctime(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        return f"{self._text},{int((created - second) * 1000):03d}"


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Send every record at `level` or above to stderr in `fmt`, replacing the root logger's
    handlers (uvicorn's own loggers must be left to propagate: `log_config=None`). Access lines
    go to the handler in batches (`LineHandler`) when `level` lets them through."""
    handler = LineHandler(sys.stderr, fmt)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    set_access_sink(handler.access if access_logger.isEnabledFor(logging.INFO) else None)
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
