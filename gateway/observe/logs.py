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
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

from gateway.observe.requests import (
    ACCESS_FORMAT,
    MAX_PATH,
    AccessFacts,
    access_logger,
    access_sink,
    current_request_id,
    printable_path,
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
    does, but access lines gathered and written in batches. A request's whole cost of its line
    is `access`: one tuple of facts (`AccessLine`'s fields) appended to a deque, no lock, no
    record, no formatting. Measured in process (the observer around a trivial app, against the
    same without an access log), a text line cost a request 2.5 us, a JSON line 6.5 us: a
    tuple class and `round` on the path, a lock, then three calls and three formats per text
    line, a `datetime` and `json.dumps` per JSON one. Now 1.4 us and 2.4 us, of which about
    0.4 us on the request's path; the rest is rendering (one `%` per line, the time's second
    made once a second) and the write, off it. A kept answer costs the server some 60 us of
    CPU (`bench.access_log`).

    What gathered is rendered and written in one write `interval` seconds after the first of
    it, by a timer of the event loop that gathered it (in that thread: a writer thread measured
    dearer, the interpreter's lock passing between the two), as it is before any other record is
    written (so lines stay in the order they happened), at a flush or close (at exit), by the
    request that brings the gathered lines to `most`, and, for lines gathered outside an event
    loop, by a daemon thread every `backstop` seconds. A process killed outright loses at most
    `interval` seconds of access lines.

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
        self._render = access_json if fmt == "json" else access_text
        self._most = most
        # A deque: appending needs no lock (the writers take lines off its other end, under
        # the handler's lock, and a line appended meanwhile waits for the next write).
        self._pending: deque[AccessFacts] = deque()
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

    def access(self, facts: AccessFacts) -> None:
        """Take one access line's facts: what a request pays for its line."""
        pending = self._pending
        pending.append(facts)
        timer_loop = self._timer_loop
        # A timer set on a loop that has closed since will never fire: set another.
        if timer_loop is None or timer_loop.is_closed():
            self._set_timer()
        if len(pending) >= self._most:
            # The writes are not keeping up (a stalled stream): write here, so that the lines
            # waiting stay bounded.
            self.write_access()

    def _set_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # outside a loop: the backstop thread writes it
        with self.lock:  # type: ignore[union-attr]  # made by createLock, never None here
            if self._timer_loop is None or self._timer_loop.is_closed():
                self._timer_loop = loop
                loop.call_later(self._interval, self._write_timed, loop)

    def _write_timed(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer_loop is loop:  # not a later timer, set after this loop closed
                self._timer_loop = None
            self._write_pending()
            self.stream.flush()

    def write_access(self) -> None:
        """Write the access lines gathered so far, in one write."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            self.stream.flush()

    def _write_pending(self) -> None:
        """Under the lock (writers one at a time, in order)."""
        pending = self._pending
        if pending:
            take = pending.popleft
            self.stream.write(self._render([take() for _ in range(len(pending))]))

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


#: An access line in the text format: `TextFormatter`'s line for the record `gateway.access`
#: makes of it, as one `%` (the time's second, its milliseconds, then `ACCESS_FORMAT`'s fields).
_TEXT_LINE: Final = f"%s,%03d INFO {access_logger.name} [%s] {ACCESS_FORMAT}\n"
#: The same line in the JSON format: `JsonFormatter`'s keys, in its order (`json.dumps` with
#: its default separators), its strings quoted as `json.dumps` quotes them (`_quote`).
_JSON_LINE: Final = (
    '{"time": "%s.%03d+00:00", "level": "INFO", "logger": "'
    + access_logger.name
    + '", "message": %s, "request_id": %s, "method": %s, "path": %s, "status": %d, '
    '"duration_ms": %r, "operation": %s}\n'
)
#: `json.dumps`'s own quoting of a string (with `ensure_ascii=False`, as `JsonFormatter`).
_quote: Final[Callable[[str], str]] = json.encoder.encode_basestring


def access_text(lines: Iterable[AccessFacts]) -> str:
    """Access lines as `TextFormatter` writes the records `RequestObserver` would make (local
    time, as `logging.Formatter.formatTime`), each ending with a newline."""
    parts = []
    second, stamp = -1, ""
    for created, request_id, method, path, status, seconds, operation in lines:
        whole = int(created)
        if whole != second:
            second, stamp = whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
        if len(path) > MAX_PATH or not path.isprintable():
            path = printable_path(path)
        parts.append(
            _TEXT_LINE
            % (
                stamp,
                (created - whole) * 1000,
                request_id,
                method,
                path,
                status,
                seconds * 1000,
                operation or "-",
            )
        )
    return "".join(parts)


def access_json(lines: Iterable[AccessFacts]) -> str:
    """Access lines as `JsonFormatter` writes the records `RequestObserver` would make (the
    time in UTC, as `datetime.isoformat` with milliseconds), each ending with a newline."""
    parts = []
    second, stamp = -1, ""
    for created, request_id, method, path, status, seconds, operation in lines:
        # As `datetime.fromtimestamp` does: microseconds rounded half to even, which may
        # carry into the next second.
        whole = int(created)
        micro = round((created - whole) * 1e6)
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        if whole != second:
            second, stamp = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        if len(path) > MAX_PATH or not path.isprintable():
            path = printable_path(path)
        milliseconds = round(seconds * 1000, 1)
        message = ACCESS_FORMAT % (method, path, status, milliseconds, operation or "-")
        parts.append(
            _JSON_LINE
            % (
                stamp,
                micro // 1000,
                _quote(message),
                _quote(request_id),
                _quote(method),
                _quote(path),
                status,
                milliseconds,
                "null" if operation is None else _quote(operation),
            )
        )
    return "".join(parts)


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
