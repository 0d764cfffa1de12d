"""Server-Sent Events read from an httpx streaming response, as the graphql-sse protocol sends
them: `event: next` / `event: complete` with one `data:` line, and `: ping` comments between."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["EVENT_STREAM", "Comment", "Event", "operation_over_sse", "stream_items"]

#: What a client sends in `Accept` to be answered with an event stream.
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class Event:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class Comment:
    text: str


async def stream_items(response: httpx.Response) -> AsyncIterator[Event | Comment]:
    """Each event and comment of `response`'s body, in order, as the stream delivers them."""
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Comment(line[1:].strip())
        elif line == "":
            if event or data:
                yield Event(event or "message", "\n".join(data))
            event, data = "", []
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


async def operation_over_sse(
    http: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, list[Event]]:
    """POSTs one operation asking for an event stream; returns the response and its events (up
    to `complete`, comments left out), or no events when the answer is no stream."""
    async with http.stream(
        "POST", url, json=payload, headers={"accept": EVENT_STREAM, **(headers or {})}
    ) as response:
        if not response.headers.get("content-type", "").startswith(EVENT_STREAM):
            await response.aread()
            return response, []
        events = []
        async for item in stream_items(response):
            if isinstance(item, Event):
                events.append(item)
                if item.event == "complete":
                    break
        return response, events
