"""HTTP/1.1 over raw sockets, for tests of what a client may do that an HTTP library won't:
trickle bytes, stall, stay silent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

#: The longest a test waits for the server to act (close, answer): generous, so that a loaded
#: machine never fails it; the test asserts the event, never how long it took.
PATIENCE = 20.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def raw_connection(
    base_url: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it sends nothing)."""
    try:
        return await asyncio.wait_for(reader.read(), PATIENCE)
    except ConnectionResetError:
        return b""


def parse_responses(data: bytes) -> list[RawResponse]:
    """The responses (each with a content-length) in `data`, in order."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        responses.append(RawResponse(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses


async def trickle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    *,
    then: bytes = b"",
    interval: float = 0.05,
) -> None:
    """Sends `data` a byte at a time, then `then` a byte at a time for ever, until the server
    closes the connection."""
    sent = 0
    while not reader.at_eof() and not writer.is_closing():
        byte = data[sent : sent + 1] if sent < len(data) else then[:1]
        sent += 1
        if byte:
            writer.write(byte)
            try:
                await writer.drain()
            except ConnectionError:
                return
        await asyncio.sleep(interval)


def request_head(method: str, path: str, **headers: str | int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: gateway"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
