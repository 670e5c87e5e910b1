"""ASGI responses that wait on a job: a stream of SSE frames or one JSON body, with the HTTP status
decided by the job's first event, and the job cancelled as soon as the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from modelport import tracing
from modelport.broker.job_handle import JobHandle
from modelport.gateway.errors import render_error
from modelport.gateway.render import BodyBuilder, StreamRenderer
from modelport.gateway.submission import Submission
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
# What an endpoint does with a finished answer's renderer before its last bytes go out (store it, say).
Keep = Callable[[StreamRenderer | BodyBuilder], Awaitable[None]]
QUEUE_COMMENT_S = 5.0


class JobResponse:
    """Serves one job to one client, streamed by a ``StreamRenderer`` or as one body a ``BodyBuilder``
    builds (``render`` makes either for the name the answer shows). Until the first delta, a failure a
    fallback may avoid moves the request to the next one (see ``Submission``)."""

    def __init__(self, handle: JobHandle, submission: Submission, usage: UsageWriter, outcome: Outcome,
                 render: Callable[[str], StreamRenderer | BodyBuilder], requested: str,
                 headers: dict[str, str], keep: Keep | None = None) -> None:
        self.handle = handle
        self.submission = submission
        self.jobs = submission.jobs
        self.usage = usage
        self.outcome = outcome
        self.render = render
        self.keep = keep
        fell_back = submission.served_by != submission.named
        self.renderer = render(submission.served_by if fell_back else requested)
        self._headers = {**headers, "x-modelport-served-by": submission.served_by}

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(name.encode(), value.encode()) for name, value in self._headers.items()]

    async def _next_or_fallback(self) -> Event:
        """The job's next event; a failure before any delta that a fallback may avoid moves the request to
        the fallback's job, whose events follow."""
        event = await self.handle.next()
        while isinstance(event, Failed) and await self._fell_back(event):
            event = await self.handle.next()
        return event

    async def _fell_back(self, failed: Failed) -> bool:
        submitting = asyncio.ensure_future(self.submission.fall_back(failed.error))
        try:
            handle = await asyncio.shield(submitting)
        except asyncio.CancelledError:  # the client left meanwhile: the job submitted for it is cancelled too
            with contextlib.suppress(Exception):
                self._follow(await submitting)
            raise
        self._follow(handle)
        return handle is not None

    def _follow(self, handle: JobHandle | None) -> None:
        """Serve the fallback's job from now on (nothing, when there was none)."""
        if handle is None:
            return
        served = self.submission.served_by
        self.handle = handle
        self.outcome.job_id, self.outcome.model = handle.job.id, served
        self.outcome.charge(self.submission.entries[served])
        self.renderer = self.render(served)
        self._headers["x-modelport-served-by"] = served
        access = self._scope.get("state", {}).get("access")  # the access log and its metric name it too
        if isinstance(access, dict):
            access.update(model=served, job=handle.job.id)

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
        self._trace_phases()
        if client_gone and not self.handle.finished:
            await self.jobs.cancel(self.handle)
            self.usage.settle_later(self.handle, self.outcome)
            return
        self.usage.record(self.outcome)

    def _trace_phases(self) -> None:
        """The job's phases as the client saw them, as children of the request's span."""
        outcome = self.outcome
        if outcome.ttft_s is not None:
            tracing.record("time to first token", outcome.started_at, outcome.ttft_s,
                           attributes={"modelport.job": outcome.job_id})
            tracing.record("streaming", outcome.ttft_s, outcome.ended_at,
                           attributes={"modelport.completion_tokens": outcome.completion_tokens})

    async def _respond(self, send: Send) -> None:
        renderer = self.renderer
        waiting = self.handle.position > 0 or self.handle.awaits_first_worker
        if not isinstance(renderer, BodyBuilder) and renderer.comments and waiting:
            await self._send_queued_stream(send)
            return
        first = await self._next_or_fallback()
        if isinstance(first, Failed):
            self.outcome.settle(first, self.handle.delivered_pieces)
            await render_error(first.error, self._headers)(self._scope, self._receive, send)
            return
        self.outcome.ttft_s = time.monotonic()
        if isinstance(self.renderer, BodyBuilder):
            await self._send_completion(send, self.renderer, first)
        else:
            await self._send_stream(send, self.renderer, first)

    async def _send_completion(self, send: Send, builder: BodyBuilder, first: Delta | Done) -> None:
        event: Event = first
        while isinstance(event, Delta):
            builder.add(event)
            event = await self.handle.next()
        self.outcome.settle(event, self.handle.delivered_pieces)
        if isinstance(event, Failed):
            await render_error(event.error, self._headers)(self._scope, self._receive, send)
            return
        if not self.outcome.price.free:
            self._headers["x-modelport-cost"] = f"{self.outcome.cost:.8f}"
        body = builder.body(event)
        if self.keep is not None:
            await self.keep(builder)
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS + self.headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_queued_stream(self, send: Send) -> None:
        """A stream that waits behind others (or for the first worker of a model that scales to zero): the
        headers go out at once (``x-modelport-served-by`` names the first LLM tried; the chunks name a fallback
        that answers), then SSE comments with its place in the queue until the first token (any failure now
        arrives as an error frame)."""
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.headers})
        comment = (f": queued, position {self.handle.position}" if self.handle.position
                   else ": waiting for a worker to start")
        await send({"type": "http.response.body", "body": f"{comment}\n\n".encode(), "more_body": True})
        while True:
            try:
                first = await asyncio.wait_for(self.handle.next(), timeout=QUEUE_COMMENT_S)
            except TimeoutError:
                await send({"type": "http.response.body", "body": await self._queue_comment(), "more_body": True})
                continue
            if isinstance(first, Failed) and await self._fell_back(first):
                continue
            if isinstance(first, Delta):
                self.outcome.ttft_s = time.monotonic()
            renderer = self.renderer
            assert not isinstance(renderer, BodyBuilder), "only streams wait with comments"
            await self._stream_events(send, renderer, [first])
            return

    async def _queue_comment(self) -> bytes:
        try:
            position = await self.jobs.position(self.handle)
        except QUEUE_ERRORS:
            return b": still queued\n\n"
        if position:
            return f": queued, position {position}\n\n".encode()
        return b": waiting for a worker to start\n\n" if self.handle.awaits_first_worker else b": starting\n\n"

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
                body += (renderer.end(event.usage, self._cost()) if isinstance(event, Done)
                         else renderer.fail(event.error))
                if isinstance(event, Done) and self.keep is not None:
                    await self.keep(renderer)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            if body:
                await send({"type": "http.response.body", "body": bytes(body), "more_body": True})
            pending = [await self.handle.next(), *self.handle.ready()]


    def _cost(self) -> dict[str, Any] | None:
        """What the answer cost (in the installation's currency), for the stream's usage chunk; nothing for a
        free model."""
        return None if self.outcome.price.free else {"cost": round(self.outcome.cost, 8)}


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
