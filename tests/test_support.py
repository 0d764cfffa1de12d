"""`tests.support` itself: a taken port costs a retry, a started server is the child's own, and
`timers_fired` sees every wait and nothing else."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from tests.support import ports
from tests.support.ports import AddressInUse, start_on_free_port
from tests.support.processes import listens
from tests.support.redis import RedisServer, answers_ping
from tests.support.waiting import timers_fired


def test_a_start_that_finds_its_port_taken_is_tried_on_another() -> None:
    tried: list[int] = []

    def start(port: int) -> int:
        tried.append(port)
        if len(tried) < 3:
            raise AddressInUse(port)
        return port

    assert start_on_free_port(start) == tried[-1]
    assert len(tried) == 3


def test_starts_give_up_after_their_attempts_and_never_retry_other_errors() -> None:
    tried: list[int] = []

    def taken(port: int) -> None:
        tried.append(port)
        raise AddressInUse(port)

    with pytest.raises(AddressInUse):
        start_on_free_port(taken, attempts=4)
    assert len(tried) == 4

    def broken(port: int) -> None:
        tried.append(port)
        raise RuntimeError("no such binary")

    tried.clear()
    with pytest.raises(RuntimeError, match="no such binary"):
        start_on_free_port(broken)
    assert len(tried) == 1


def test_listens_names_the_process_that_listens() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listens(os.getpid(), port)
        assert not listens(os.getppid(), port)
    assert not listens(os.getpid(), port)


@pytest.mark.slow
def test_a_redis_started_on_the_port_of_another_starts_again_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worst race: the port is taken by a server that answers PING itself. The new child
    # exits ("Address already in use"); the other's answers must not pass for its own.
    with RedisServer("holder") as holder:
        candidates = iter([holder.port])
        pick = ports.candidate_port
        monkeypatch.setattr(ports, "candidate_port", lambda: next(candidates, None) or pick())
        with RedisServer("newcomer") as newcomer:
            assert newcomer.port != holder.port
            assert listens(newcomer.pid, newcomer.port)
            newcomer.kill()
            assert answers_ping(holder.port)  # the holder was never touched


@pytest.mark.slow
def test_a_private_redis_dies_freezes_and_comes_back_on_its_port() -> None:
    with RedisServer() as server:
        port = server.port
        server.kill()
        with pytest.raises(ConnectionRefusedError):
            answers_ping(port)
        server.restart()
        assert (server.port, answers_ping(port)) == (port, True)
        server.pause()
        with pytest.raises(TimeoutError):  # connected (the kernel accepts), never answered
            answers_ping(port)
        server.resume()
        assert answers_ping(port)


async def test_timers_fired_sees_waits_and_not_timeouts_that_were_not_reached() -> None:
    with timers_fired() as fired:
        async with asyncio.timeout(60):
            await asyncio.sleep(0)
    assert fired == []
    with timers_fired() as fired:
        await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.sleep(0.001), 60)
    assert len(fired) == 2
