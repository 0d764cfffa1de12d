"""`AnswerCache` as plain ASGI, in front of an app it holds at will: identical requests that
arrive while one executes wait for its answer and are answered its bytes, when that answer may
be kept; otherwise each executes as before."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.admission import Admission
from gateway.answers.http import SCOPE_KEY, AnswerCache, KeptAnswers
from gateway.answers.store import AnswerStore
from gateway.api.cacheability import Cacheability
from gateway.jobs.versions import SnapshotVersions
from gateway.model import JobState
from tests.jobs.jobfakes import make_job
from tests.support.waiting import eventually

POLL = json.dumps({"query": 'query Poll { job(id: "j1") { id state } }'}).encode()


class App:
    """The GraphQL app behind the cache: each execution reports to the request's
    `Cacheability` what `report` says, answers a body of its own (numbered), and waits for
    `release` while `hold` is set."""

    def __init__(self) -> None:
        self.ran = 0
        self.hold = False
        self.release = asyncio.Event()
        #: Whether each execution's answer may be kept (False: it forbids keeping).
        self.keepable = True
        #: A running snapshot each execution reads, with these versions (None: none).
        self.versions: SnapshotVersions | None = None
        self._numbers = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ran += 1
        number = next(self._numbers)
        verdict: Cacheability = scope[SCOPE_KEY]
        if self.versions is not None:
            running = dataclasses.replace(
                make_job("j1", JobState.ANALYSING), fetched_at=time.time()
            )
            self.versions.stored("j1", running)
            verdict.read_running(running, self.versions)
        if self.hold:
            await self.release.wait()
        if not self.keepable:
            verdict.forbid("a test's answer that moves")
        verdict.ended("query", "query Poll", 0)
        body = json.dumps({"data": {"execution": number}}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def cache(app: App, kept: KeptAnswers) -> AnswerCache:
    return AnswerCache(app, kept=kept, fingerprint="test", lifetime=3600.0, running_ttl=60.0)


def kept_answers(*, versions: SnapshotVersions | None = None) -> KeptAnswers:
    # 0 bytes would turn keeping off; 1 MiB keeps what is admitted (second sightings).
    return KeptAnswers(store=AnswerStore(1 << 20, max_answer_bytes=1 << 16), versions=versions)


async def poll(app: Any, **headers: str) -> bytes:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            *((name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()),
        ],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": POLL, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    return b"".join(message.get("body", b"") for message in sent[1:])


async def held_leader_and_followers(
    app: App, front: Any, followers: int, *, running: Admission | None = None, **headers: str
) -> tuple[bytes, list[bytes]]:
    """One request executing (held by `app`), then `followers` identical ones, one after the
    other; all answered once `app` is released. With `running`, each follower is checked not
    to count as running while it waits (only the leader does)."""
    app.hold = True
    leader = asyncio.ensure_future(poll(front, **headers))
    ran = app.ran + 1
    await eventually(lambda: app.ran == ran, "the leader executing")
    rest = []
    for _ in range(followers):
        rest.append(asyncio.ensure_future(poll(front, **headers)))
        for _ in range(5):  # the follower reaches its wait (or its own execution)
            await asyncio.sleep(0)
        if running is not None:
            assert running.running == 1
    app.hold = False
    app.release.set()
    return await leader, list(await asyncio.gather(*rest))


async def test_requests_arriving_while_an_identical_one_executes_get_its_answer() -> None:
    app, kept = App(), kept_answers()
    front = cache(app, kept)
    await poll(front)  # answered once with an answer that may be kept: followed from now on
    first_sighting_only = kept.store.stats.admitted == 0

    leader, followers = await held_leader_and_followers(app, front, followers=5)

    assert first_sighting_only  # nothing was kept yet: the followers cannot be kept hits
    assert app.ran == 2  # the first poll, then the leader; none of the five
    assert followers == [leader] * 5
    assert json.loads(leader) == {"data": {"execution": 2}}
    assert kept.joined == 5


async def test_when_the_answer_may_not_be_kept_each_request_executes() -> None:
    app, kept = App(), kept_answers()
    front = cache(app, kept)
    await poll(front)
    app.keepable = False  # say the answer came out with an error this time

    leader, followers = await held_leader_and_followers(app, front, followers=3)

    assert app.ran == 1 + 1 + 3  # the followers waited, then executed
    assert sorted(json.loads(body)["data"]["execution"] for body in [leader, *followers]) == [
        2,
        3,
        4,
        5,
    ]
    assert kept.joined == 0


async def test_a_key_whose_last_answer_could_not_be_kept_is_not_waited_for() -> None:
    app, kept = App(), kept_answers()
    front = cache(app, kept)
    app.keepable = False
    await poll(front)  # not keepable: identical requests will not wait for each other
    app.hold = True
    requests = [asyncio.ensure_future(poll(front)) for _ in range(3)]

    # All three execute at once, while the app holds every one of them.
    await eventually(lambda: app.ran == 4, "every request executing")
    app.release.set()
    await asyncio.gather(*requests)
    assert kept.joined == 0


async def test_an_answer_whose_running_snapshot_was_replaced_meanwhile_is_not_handed_on() -> None:
    versions = SnapshotVersions()
    app, kept = App(), kept_answers(versions=versions)
    app.versions = versions
    front = cache(app, kept)
    await poll(front)
    app.hold = True
    leader = asyncio.ensure_future(poll(front))
    await eventually(lambda: app.ran == 2, "the leader executing")
    follower = asyncio.ensure_future(poll(front))
    for _ in range(5):
        await asyncio.sleep(0)
    # The follower waits for the leader; the leader's snapshot is replaced before it answers.
    app.versions = None  # the follower's own execution reads nothing that moves
    newer = make_job("j1", JobState.SUCCESS)
    versions.stored("j1", newer)
    app.hold = False
    app.release.set()

    await leader
    await follower
    assert app.ran == 3  # the follower executed: the leader's answer was outdated already
    assert kept.joined == 0


async def test_a_follower_executes_itself_once_its_deadline_nears() -> None:
    app, kept = App(), kept_answers()
    # Admission in front, as in the gateway: it gives each request its deadline.
    front = Admission(cache(app, kept), default_timeout=30.0)
    await poll(front)
    app.hold = True
    leader = asyncio.ensure_future(poll(front))
    await eventually(lambda: app.ran == 2, "the leader executing")
    # A client that gives its request a fifth of a second: it stops waiting for the leader
    # before that, and executes (here: reaches the app, still held).
    follower = asyncio.ensure_future(poll(front, x_request_timeout="0.2"))

    await eventually(lambda: app.ran == 3, "the follower executing on its own")
    app.release.set()
    await leader
    await follower
    assert kept.joined == 0


async def test_a_request_waiting_for_another_s_answer_does_not_count_as_running() -> None:
    app, kept = App(), kept_answers()
    # Room for two requests running at once: the leader, and one more at a time.
    gate = Admission(cache(app, kept), default_timeout=30.0, max_concurrent=2)
    await poll(gate)

    leader, followers = await held_leader_and_followers(app, gate, followers=3, running=gate)

    assert followers == [leader] * 3  # none refused OVERLOADED: each stepped out to wait
    assert (app.ran, kept.joined, gate.running) == (2, 3, 0)
