"""ScriptBatcher on the real Redis: calls made together go in one pipeline, each with its own
answer or error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import redis.exceptions

from gateway.shared.backend import open_redis
from gateway.shared.pipelining import ScriptBatcher
from tests.jobs.redisutil import (
    CountingRedis,
    counting_client,
    delete_prefix,
    private_redis,
    unique_prefix,
    wait_until_up,
)

# Answers its argument doubled, or fails when asked to.
DOUBLE = """
if ARGV[1] == 'fail' then
  return redis.error_reply('asked to fail')
end
redis.call('INCR', KEYS[1])
return tonumber(ARGV[1]) * 2
"""


@pytest.fixture
async def counting() -> AsyncIterator[CountingRedis]:
    client = counting_client()
    prefix = unique_prefix()
    client.prefix = prefix  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await delete_prefix(client, prefix)
        await client.aclose()


async def test_calls_made_together_share_one_pipeline_and_keep_their_own_answers(
    counting: CountingRedis,
) -> None:
    script = counting.register_script(DOUBLE)
    batcher = ScriptBatcher(counting)
    key = f"{counting.prefix}:count"  # type: ignore[attr-defined]
    answers = await asyncio.gather(*(batcher.run(script, [key], [n]) for n in range(100)))
    assert answers == [2 * n for n in range(100)]
    # The first call went alone (nothing was on its way), the 99 others together; a Redis that
    # lost the script loads it once more, for the calls that needed it.
    pipelines = [command for command in counting.commands if command.startswith("PIPELINE")]
    assert len(pipelines) <= 2
    assert sum(pipeline.count("EVALSHA") for pipeline in pipelines) == 100
    assert await counting.get(key) == b"100"


async def test_one_call_s_error_is_its_own(counting: CountingRedis) -> None:
    script = counting.register_script(DOUBLE)
    batcher = ScriptBatcher(counting)
    key = f"{counting.prefix}:count"  # type: ignore[attr-defined]
    answers = await asyncio.gather(
        batcher.run(script, [key], [1]),
        batcher.run(script, [key], ["fail"]),
        batcher.run(script, [key], [3]),
        return_exceptions=True,
    )
    assert answers[0] == 2
    assert isinstance(answers[1], redis.exceptions.ResponseError)
    assert "asked to fail" in str(answers[1])
    assert answers[2] == 6


async def test_a_script_redis_forgot_is_loaded_again() -> None:
    # A private Redis: flushing the scripts of the shared one would disturb other tests.
    with private_redis() as server:
        await wait_until_up(server)
        client = counting_client(server.url)
        try:
            script = client.register_script(DOUBLE)
            batcher = ScriptBatcher(client)
            assert await batcher.run(script, ["count"], [1]) == 2
            await client.script_flush()  # as a restarted Redis would have it
            answers = await asyncio.gather(*(batcher.run(script, ["count"], [n]) for n in (2, 3)))
            assert answers == [4, 6]
        finally:
            await client.aclose()


async def test_a_caller_cancelled_before_its_batch_leaves_is_left_out(
    counting: CountingRedis,
) -> None:
    script = counting.register_script(DOUBLE)
    batcher = ScriptBatcher(counting)
    key = f"{counting.prefix}:count"  # type: ignore[attr-defined]
    first = asyncio.ensure_future(batcher.run(script, [key], [1]))  # goes out first
    await asyncio.sleep(0)
    left = asyncio.ensure_future(batcher.run(script, [key], [2]))  # waits for the next batch
    kept = asyncio.ensure_future(batcher.run(script, [key], [3]))
    await asyncio.sleep(0)
    left.cancel()
    assert await first == 2
    assert await kept == 6
    with pytest.raises(asyncio.CancelledError):
        await left
    assert await counting.get(key) == b"2"  # the cancelled call never ran


async def test_a_redis_that_does_not_answer_fails_every_call_of_the_batch() -> None:
    nowhere: redis.asyncio.Redis = open_redis("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        script = nowhere.register_script(DOUBLE)
        batcher = ScriptBatcher(nowhere)
        answers = await asyncio.gather(
            *(batcher.run(script, ["k"], [n]) for n in range(3)), return_exceptions=True
        )
    finally:
        await nowhere.aclose()
    assert all(isinstance(answer, redis.exceptions.ConnectionError) for answer in answers)
