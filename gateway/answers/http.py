"""`AnswerCache`: ASGI middleware that answers a repeated GraphQL request from kept bytes, and
gives every answer of the endpoint its HTTP caching headers.

For a POST with a JSON body or a GET (not a browser asking for GraphiQL), it reads the
request's key (`gateway.answers.requests`) and looks it up in memory, then, when the gateway
shares Redis, in Redis. A hit is answered as is: nothing is parsed, validated or executed.
A miss runs the GraphQL app with a `Cacheability` in the ASGI scope (`SCOPE_KEY`), which the
context hands to the resolvers and the operation policy; when the operation ended cacheable,
its exact answer is kept (see `gateway.answers.store` for what is admitted) and shared.

An answer that read running jobs is kept too, in this process only, until the earliest expiry of
the snapshots it read, and served only while each of them is still the snapshot the fetcher
holds (`gateway.jobs.versions`): it is exactly what executing the request again would answer.

A miss whose key is executing already for another request, and whose last answer could be kept,
waits for that execution instead of executing too, and is answered its answer when that one may
be kept (right now, by the same checks as a kept answer; kept or not, say a first sighting);
else it executes. So the pollers of a running job whose kept answer just expired cost one
execution, not one each, however many arrive while the snapshots are refetched.

Headers: a GET answer of finished jobs only that may be kept carries a strong `ETag` and
`Cache-Control: public` (`private` when it depends on the caller), `max-age` its remaining
lifetime, and `immutable` when nothing in it can change; an `If-None-Match` naming its ETag gets
`304 Not Modified`. Every other answer of the endpoint (answers of running jobs included), and
every POST answer (which browsers and CDNs do not reuse), carries `Cache-Control: no-store`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final

from cachetools import LRUCache
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admission import deadline_of, running_slot
from gateway.answers.requests import AnswerKey, read_get, read_post
from gateway.answers.shared import SharedAnswers
from gateway.answers.store import Answer, AnswerStore
from gateway.api.cacheability import Cacheability
from gateway.api.context import waits_end
from gateway.api.http import accepts_json, response_media_type
from gateway.api.observer import NO_OBSERVER, ApiObserver
from gateway.callers.authenticator import Authenticator
from gateway.callers.caller import UNAUTHENTICATED_OPERATOR, Caller
from gateway.callers.rate import TenantRateLimit
from gateway.errors import RateLimited, Unauthenticated
from gateway.jobs.cache import UNCOUNTED, Lookups
from gateway.jobs.versions import SnapshotVersions
from gateway.observe.requests import current_request

__all__ = ["CALLER_SCOPE_KEY", "SCOPE_KEY", "AnswerCache", "KeptAnswers", "caller_visibility"]

#: Where a request's `Cacheability` travels in the ASGI scope.
SCOPE_KEY: Final = "gateway.cacheability"
#: Where this middleware leaves the request's `Caller` in the ASGI scope, for the view to take
#: instead of authenticating the request again.
CALLER_SCOPE_KEY: Final = "gateway.caller"

_NO_STORE: Final = (b"cache-control", b"no-store")
#: Content types of answers that may be kept.
_JSON_TYPES: Final = (b"application/json", b"application/graphql-response+json")
#: Requests remembered by their bytes, and the longest remembered (at most 8 MiB together).
MAX_ALIASES: Final = 4096
#: Requests longer than this are not looked up nor kept: reading their key would double the
#: work of parsing them, and a request that long is rarely asked again as is.
MAX_KEYED_BYTES: Final = 64 * 1024
MAX_ALIASED_BYTES: Final = 2048
#: Keys remembered as answered with an answer that may be kept: a request of one of them waits
#: for an execution of it under way rather than executing too.
MAX_FOLLOWED_KEYS: Final = 4096


@dataclass(slots=True)
class KeptAnswers:
    """Where answers are kept: this process's store, and the fleet's once Redis is known."""

    store: AnswerStore
    shared: SharedAnswers | None = None
    #: The fetcher's snapshot versions, once the fetcher is made: answers built from running
    #: snapshots are kept only with it (it tells when they are outdated).
    versions: SnapshotVersions | None = None
    #: Requests answered with the answer of an identical request executing when they arrived.
    joined: int = 0

    def report(self) -> dict[str, object]:
        """What /readyz tells of the kept answers (snake_case keys)."""
        report: dict[str, object] = {
            **asdict(self.store.stats),
            "entries": len(self.store),
            "bytes": self.store.bytes,
            "max_bytes": self.store.max_bytes,
            "shared": self.shared is not None,
            "joined": self.joined,
        }
        if self.shared is not None:
            report["shared_hits"] = self.shared.hits
            report["shared_misses"] = self.shared.misses
        return report


def caller_visibility(caller: Caller) -> tuple[str, bool]:
    """Who may see the answer: what `caller` may see (`Caller.visibility`, part of the key), and
    whether the answer depends on the caller (an authenticated one: then it is private to HTTP
    caches). Two callers share kept answers only when they see the same jobs."""
    return caller.visibility, caller.method != "none"


class AnswerCache:
    """See the module docstring. `kept` holds where answers are kept; `fingerprint` names
    what shapes answers (schema and settings), `lifetime` is the longest an answer is kept
    (the finished-snapshot ttl). `observer` is told of each operation a kept answer answers,
    `memory` and `redis` count the lookups of each tier. `hashes` False: a request naming its
    document by hash alone is never answered here (persisted queries are off: the view refuses
    it). `authenticator` finds the caller before anything is looked up (a request it refuses
    goes to the view, which answers 401), and a kept answer takes its operation from
    `rate_limit` as the view would (over the rate, the view answers)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        kept: KeptAnswers,
        fingerprint: str,
        lifetime: float,
        running_ttl: float = 0.0,
        path: str = "/graphql",
        observer: ApiObserver = NO_OBSERVER,
        memory: Lookups = UNCOUNTED,
        redis: Lookups = UNCOUNTED,
        hashes: bool = True,
        authenticator: Authenticator | None = None,
        rate_limit: TenantRateLimit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.kept = kept
        self.fingerprint = fingerprint
        self.lifetime = lifetime
        self.running_ttl = running_ttl
        self.path = path
        self.observer = observer
        self.hashes = hashes
        self.authenticator = authenticator
        self.rate_limit = rate_limit
        self._memory = memory
        self._redis = redis
        self._clock = clock
        # The request's own bytes (body or query string) -> its key, for requests answered
        # from a kept answer: a repeat sent byte for byte alike (what a client's poller or a
        # CDN sends) skips reading the JSON and hashing its parts.
        self._aliases: LRUCache[tuple[str, str, bytes], AnswerKey] = LRUCache(maxsize=MAX_ALIASES)
        # Key digest -> the answer of the execution of that key under way (None when it may
        # not be kept), for the identical requests that arrive meanwhile.
        self._executing: dict[bytes, asyncio.Future[Answer | None]] = {}
        # Digests whose last execution answered something that may be kept: only for those is
        # waiting for an execution under way worth it (an answer that moves, `ageSeconds` say,
        # would make its followers wait, then execute anyway).
        self._followed: LRUCache[bytes, bool] = LRUCache(maxsize=MAX_FOLLOWED_KEYS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        raw: bytes | None = None
        if method == "POST":
            if _header(scope, b"content-type").startswith(b"application/json"):
                messages, raw = await _read_body(receive)
                receive = _replay(messages, receive)
        elif method == "GET":
            if b"text/html" in _header(scope, b"accept"):
                await self.app(scope, receive, send)  # GraphiQL's page, with its own headers
                return
            raw = scope["query_string"]
        accept = _header(scope, b"accept").lower()
        if b"text/event-stream" in accept and not accepts_json(accept.decode("latin-1")):
            # An event stream (graphql-sse) whatever the operation: the view's own answer.
            await self.app(scope, receive, send)
            return
        if raw is None or len(raw) > MAX_KEYED_BYTES:
            await self.app(scope, receive, _no_store(send))
            return
        caller = await self._caller(scope)
        if caller is None:  # no credential the gateway accepts: the view answers 401
            await self.app(scope, receive, _no_store(send))
            return
        visibility, private = caller_visibility(caller)
        # The answer's media type follows Accept (and with it, the status of some answers):
        # answers of different media types are different answers.
        media_type = response_media_type(accept.decode("latin-1") or None)
        visibility = f"{visibility} {media_type}"
        alias = (method, visibility, raw)
        key = self._aliases.get(alias)
        if key is None:
            read = read_post if method == "POST" else read_get
            request = read(raw, hashes=self.hashes)
            if request is None:
                await self.app(scope, receive, _no_store(send))
                return
            key = AnswerKey.of(request, visibility=visibility, fingerprint=self.fingerprint)
        answer = self.kept.store.get(key.digest)
        if answer is not None and answer.snapshots and not self._current(answer):
            self.kept.store.drop(key.digest)
            answer = None
        (self._memory.misses if answer is None else self._memory.hits).inc()
        leader = None if answer is not None else self._executing.get(key.digest)
        if leader is not None and key.digest in self._followed:
            # Before Redis: the execution under way here answers it (or it executes), so a
            # request that waits for it costs no round trip.
            answer = await self._follow(scope, leader)
            if answer is not None:
                self.kept.joined += 1
        elif answer is None and self.kept.shared is not None:
            answer = await self.kept.shared.get(key.hex)
            (self._redis.misses if answer is None else self._redis.hits).inc()
            if answer is not None:
                self.kept.store.adopt(key.digest, answer)
        if answer is not None and not self._within_rate(caller):
            # Over the tenant's rate: the view says so (RATE_LIMITED), as for any operation.
            await self.app(scope, receive, _no_store(send))
            return
        if answer is not None:
            if len(raw) <= MAX_ALIASED_BYTES:
                self._aliases[alias] = key
            info = current_request()
            if info is not None:
                info.operation = answer.operation
                info.counted = True
            await self._answer(scope, answer, send)
            self.observer.operation("query", "ok", time.perf_counter() - started)
            return
        await self._execute(scope, receive, send, key, private)

    async def _execute(
        self, scope: Scope, receive: Receive, send: Send, key: AnswerKey, private: bool
    ) -> None:
        """Runs the GraphQL app, keeping its answer when it may be kept; the first of identical
        requests executing at once leads: those arriving meanwhile may take its answer."""
        running_ttl = self.running_ttl if self.kept.versions is not None else 0.0
        verdict = Cacheability(self.lifetime, running_ttl=running_ttl)
        scope[SCOPE_KEY] = verdict
        digest = key.digest
        answered: asyncio.Future[Answer | None] | None = None
        if digest not in self._executing:
            answered = asyncio.get_running_loop().create_future()
            self._executing[digest] = answered
        try:
            await self.app(
                scope, receive, self._keeping(scope, key, verdict, private, send, answered)
            )
        finally:
            if answered is not None:
                if self._executing.get(digest) is answered:
                    del self._executing[digest]
                if not answered.done():
                    answered.set_result(None)

    async def _follow(self, scope: Scope, leader: asyncio.Future[Answer | None]) -> Answer | None:
        """The answer of the identical request executing (`leader`), if it ends by this
        request's deadline with an answer that may be served now as a kept one would; else None
        (this request then executes)."""
        deadline = deadline_of(scope)
        timeout = (
            None
            if deadline is None
            else max(0.0, waits_end(deadline.at, deadline.timeout) - time.monotonic())
        )
        # Waiting costs the process nothing: not one of the requests admission counts as
        # running (which a process short of CPU bounds), unless it runs after all.
        slot = running_slot(scope)
        if slot is not None:
            slot.leave()
        try:
            # asyncio.wait leaves `leader` alone when the timeout comes first (wait_for cancels).
            await asyncio.wait((leader,), timeout=timeout)
        finally:
            if slot is not None:
                slot.enter()
        answer = leader.result() if leader.done() else None
        if answer is None or answer.expires_at <= self._clock():
            return None
        if answer.snapshots and not self._current(answer):
            return None
        return answer

    def _current(self, answer: Answer) -> bool:
        """Whether every running snapshot `answer` was built from is still the one the process
        holds (one dict lookup a job): a snapshot replaced early (a subscription's poll, a
        submit, a refetch after a shared cache lost it) outdates the answer at once."""
        versions = self.kept.versions
        if versions is None:
            return False
        current = versions.current
        return all(current(job_id) == version for job_id, version in answer.snapshots)

    async def _caller(self, scope: Scope) -> Caller | None:
        """The request's caller, left in the scope for the view (`CALLER_SCOPE_KEY`), so
        that it authenticates once; None when its credentials are refused or missing."""
        if self.authenticator is None or not self.authenticator.enabled:
            return UNAUTHENTICATED_OPERATOR
        try:
            caller = await self.authenticator.caller(Headers(scope=scope))
        except Unauthenticated:
            return None
        scope[CALLER_SCOPE_KEY] = caller
        return caller

    def _within_rate(self, caller: Caller) -> bool:
        """Takes one operation from the caller's tenant's rate, as the view does; False when
        none is left."""
        if self.rate_limit is None:
            return True
        try:
            self.rate_limit.check(caller)
        except RateLimited:
            return False
        return True

    def _keeping(
        self,
        scope: Scope,
        key: AnswerKey,
        verdict: Cacheability,
        private: bool,
        send: Send,
        answered: asyncio.Future[Answer | None] | None,
    ) -> Send:
        """`send`, keeping the answer when the operation ended cacheable, and handing it to
        the requests that wait for it (`answered`, when this request leads)."""
        held: list[bytes] | None = None
        content_type = b"application/json"

        async def keep(message: Message) -> None:
            nonlocal held, content_type
            kind = message["type"]
            if kind == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        content_type = bytes(value)
                # Only a JSON answer is kept (a stream, say a subscription's over SSE, never).
                is_json = content_type.startswith(_JSON_TYPES)
                if message["status"] == 200 and verdict.cacheable and is_json:
                    held = []  # sent whole once the body is complete, with its headers
                    return
                self._followed.pop(key.digest, None)
                await send(_with_no_store(message))
                return
            if kind != "http.response.body" or held is None:
                await send(message)
                return
            held.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(held)
            now = self._clock()
            snapshots = tuple(verdict.snapshots.items())
            answer = Answer(
                body=body,
                content_type=content_type,
                # Never past the expiry of a running snapshot it read (`verdict.until`).
                expires_at=min(now + verdict.lifetime, verdict.until),
                immutable=verdict.lifetime >= self.lifetime and not snapshots,
                private=private,
                operation=verdict.operation,
                etag=b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"',
                snapshots=snapshots,
            )
            self._followed[key.digest] = True
            if answered is not None and not answered.done() and answer.expires_at > now:
                answered.set_result(answer)
            if answer.expires_at <= now:
                pass  # right for no time (its snapshot expired while it ran): not kept
            elif snapshots:
                # Right for a second at most: in this process's memory only (a Redis round
                # trip would cost about what it saves, and other processes cannot check it).
                self.kept.store.offer(key.digest, answer)
            elif self.kept.store.offer(key.digest, answer) and self.kept.shared is not None:
                self.kept.shared.put(key.hex, answer)
            await self._answer(scope, answer, send)

        return keep

    async def _answer(self, scope: Scope, answer: Answer, send: Send) -> None:
        # An answer of running jobs gets no HTTP caching: an HTTP cache could not tell when a
        # snapshot it was built from is replaced.
        if scope["method"] != "GET" or answer.snapshots:
            headers = [
                (b"content-type", answer.content_type),
                (b"content-length", str(len(answer.body)).encode()),
                _NO_STORE,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
            return
        max_age = max(0, int(answer.expires_at - self._clock()))
        control = b"private" if answer.private else b"public"
        control += b", max-age=" + str(max_age).encode()
        if answer.immutable:
            control += b", immutable"
        if _matches(_header(scope, b"if-none-match"), answer.etag):
            headers = [(b"etag", answer.etag), (b"cache-control", control)]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", str(len(answer.body)).encode()),
            (b"etag", answer.etag),
            (b"cache-control", control),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """Whether an `If-None-Match` value names `etag` (weak comparison, as RFC 9110 says for
    this header; `*` names any)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message up to the body's end (the outer middleware bounds its size and time),
    and the body; None for the body when the client left first."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages, messages[0].get("body", b"")
    return messages, b"".join(message.get("body", b"") for message in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, then what `receive` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _with_no_store(message: Message) -> Message:
    headers = list(message.get("headers", ()))
    if not any(key.lower() == b"cache-control" for key, _ in headers):
        headers.append(_NO_STORE)
    return {**message, "headers": headers}


def _no_store(send: Send) -> Send:
    async def no_store(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = _with_no_store(message)
        await send(message)

    return no_store
