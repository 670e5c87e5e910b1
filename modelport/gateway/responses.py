"""ASGI responses that wait on a job: a stream of SSE frames or one JSON body, with the HTTP status
decided by the job's first event, and the job cancelled as soon as the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.types import Receive, Scope, Send

from modelport.broker.job_handle import JobHandle
from modelport.broker.jobs import JobQueue
from modelport.gateway.errors import render_error
from modelport.gateway.render import CompletionBuilder, StreamRenderer
from modelport.gateway.usage import Outcome, UsageWriter
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import Delta, Done, Event, Failed

log = logging.getLogger(__name__)

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
QUEUE_COMMENT_S = 5.0


class JobResponse:
    """Serves one job to one client, streamed by a ``StreamRenderer`` or as one body a ``CompletionBuilder``
    builds."""

    def __init__(self, handle: JobHandle, jobs: JobQueue, usage: UsageWriter, outcome: Outcome,
                 renderer: StreamRenderer | CompletionBuilder, headers: dict[str, str]) -> None:
        self.headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        self.handle = handle
        self.jobs = jobs
        self.usage = usage
        self.outcome = outcome
        self.renderer = renderer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope, self._receive = scope, receive
        respond = asyncio.ensure_future(self._respond(send))
        watch = asyncio.ensure_future(_disconnected(receive))
        await asyncio.wait((respond, watch), return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        failure = respond.exception() if respond.done() else None
        if failure is not None and not isinstance(failure, OSError):
            log.error("response failed", exc_info=failure, extra={"job": self.handle.job.id})
        client_gone = not respond.done() or failure is not None
        if not respond.done():
            respond.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await respond
        self.outcome.ended_at = time.monotonic()
        if client_gone and not self.handle.finished:
            await self.jobs.cancel(self.handle)
            self.usage.settle_later(self.handle, self.outcome)
            return
        self.usage.record(self.outcome)

    async def _respond(self, send: Send) -> None:
        renderer = self.renderer
        if not isinstance(renderer, CompletionBuilder) and renderer.comments and self.handle.position > 0:
            await self._send_queued_stream(send, renderer)
            return
        first = await self.handle.next()
        if isinstance(first, Failed):
            self.outcome.settle(first, self.handle.delivered_pieces)
            await render_error(first.error)(self._scope, self._receive, send)
            return
        self.outcome.ttft_s = time.monotonic()
        if isinstance(renderer, CompletionBuilder):
            await self._send_completion(send, renderer, first)
        else:
            await self._send_stream(send, renderer, first)

    async def _send_completion(self, send: Send, builder: CompletionBuilder, first: Delta | Done) -> None:
        event: Event = first
        while isinstance(event, Delta):
            builder.add(event)
            event = await self.handle.next()
        self.outcome.settle(event, self.handle.delivered_pieces)
        if isinstance(event, Failed):
            await render_error(event.error)(self._scope, self._receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS + self.headers})
        await send({"type": "http.response.body", "body": builder.body(event.usage)})

    async def _send_queued_stream(self, send: Send, renderer: StreamRenderer) -> None:
        """A stream that waits behind others: the headers go out at once, then SSE comments with its place
        in the queue until the first token (any failure now arrives as an error frame)."""
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.headers})
        await send({"type": "http.response.body", "body": f": queued, position {self.handle.position}\n\n".encode(),
                    "more_body": True})
        while True:
            try:
                first = await asyncio.wait_for(self.handle.next(), timeout=QUEUE_COMMENT_S)
            except TimeoutError:
                await send({"type": "http.response.body", "body": await self._queue_comment(), "more_body": True})
                continue
            if isinstance(first, Delta):
                self.outcome.ttft_s = time.monotonic()
            await self._stream_events(send, renderer, [first])
            return

    async def _queue_comment(self) -> bytes:
        try:
            position = await self.jobs.position(self.handle)
        except QUEUE_ERRORS:
            return b": still queued\n\n"
        return f": queued, position {position}\n\n".encode() if position else b": starting\n\n"

    async def _send_stream(self, send: Send, renderer: StreamRenderer, first: Delta | Done) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.headers})
        await self._stream_events(send, renderer, [first])

    async def _stream_events(self, send: Send, renderer: StreamRenderer,
                             pending: list[Event]) -> None:
        while True:
            body = bytearray()
            for event in _merged(pending):
                if isinstance(event, Delta):
                    body += renderer.delta(event)
                    continue
                self.outcome.settle(event, self.handle.delivered_pieces)
                body += renderer.end(event.usage) if isinstance(event, Done) else renderer.fail(event.error)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            if body:
                await send({"type": "http.response.body", "body": bytes(body), "more_body": True})
            pending = [await self.handle.next(), *self.handle.ready()]


def _merged(events: list[Event]) -> list[Event]:
    """Consecutive deltas become one (sent as one frame); order and content are kept."""
    merged: list[Event] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, Delta) and isinstance(last, Delta):
            last.absorb(event)
        else:
            merged.append(event)
    return merged


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
