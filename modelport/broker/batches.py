"""Round trips to Redis shared by many requests: registered scripts run by SHA in one pipeline (loaded again
when Redis forgot them), and the calls made in one turn of the event loop sent together."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# One call of a registered script: the script, its keys and arguments, and how many of them are keys.
ScriptCall = tuple[AsyncScript, tuple[str | int, ...], int]


async def run_scripts(redis: Redis, calls: list[ScriptCall]) -> list[Any]:
    """Run the calls in one pipeline, by SHA (redis-py would ask SCRIPT EXISTS before every pipeline holding a
    registered script, a round trip more); the calls whose script Redis forgot (it restarted) are loaded and
    run once more. Each call's reply, or its error, in order."""
    async def run(chosen: list[ScriptCall]) -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            for script, arguments, key_count in chosen:
                pipe.evalsha(script.sha, key_count, *arguments)
            return list(await pipe.execute(raise_on_error=False))

    replies = await run(calls)
    forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if forgotten:
        for source in {calls[i][0].script for i in forgotten}:
            await redis.script_load(source)
        for i, reply in zip(forgotten, await run([calls[i] for i in forgotten]), strict=True):
            replies[i] = reply
    return replies


class Batcher:
    """Script calls made in one turn of the event loop (a burst of requests: many) go to Redis in one round
    trip; each caller gets its own replies, or the first error among them."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[list[ScriptCall], asyncio.Future[list[Any]]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def call(self, *calls: ScriptCall) -> list[Any]:
        answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(calls), answer))
        if len(self._pending) == 1:
            self._sending = asyncio.create_task(self._send())
        return await answer

    def close(self) -> None:
        """Stop: calls not yet answered are cancelled."""
        if self._sending is not None:
            self._sending.cancel()
        for _, answer in self._pending:
            answer.cancel()

    async def _send(self) -> None:
        batch, self._pending = self._pending, []
        try:
            replies = await run_scripts(self._redis, [call for calls, _ in batch for call in calls])
        except Exception as exc:  # every caller of the batch gets the failure as its own
            replies = [exc] * sum(len(calls) for calls, _ in batch)
        except BaseException:  # stopped
            for _, answer in batch:
                answer.cancel()
            raise
        start = 0
        for calls, answer in batch:
            mine, start = replies[start:start + len(calls)], start + len(calls)
            if answer.done():  # its caller went away meanwhile
                continue
            failed = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if failed is not None:
                answer.set_exception(failed)
            else:
                answer.set_result(mine)
