"""A server that does nothing but answer: the load generator's ceiling is measured against it.

`python -m bench.trivial_server --port P --body-file F` answers every HTTP/1.1 request on
127.0.0.1:P with status 200 and the bytes of F (or `{}`), keeping the connection alive. It parses
just enough of a request to find its end. If the generator reaches many times a real server's
rate against this one, the real server's rate is not the generator's limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bench.loadgen import run


class _Answer(asyncio.Protocol):
    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            start = head.find(b"\r\ncontent-length:")
            length = 0
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            assert self._transport is not None
            self._transport.write(self._response)


async def _serve(port: int, body: bytes) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode("ascii")
        + body
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Answer(response), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path)
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes() if args.body_file else b"{}"
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the benchmark stops it
        run(lambda: _serve(args.port, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
