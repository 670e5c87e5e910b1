"""The gateway's view of one submitted job: events arrive from the inbox reader into a local queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelport.protocol.envelope import Delta, Event, Failed, Job
from modelport.protocol.errors import ErrorBody


class JobHandle:
    """Events of one job in order; ends with exactly one Done or Failed."""

    def __init__(self, job: Job, on_finish: Callable[[JobHandle], None], group_id: int = 0,
                 waits_for_worker: bool = False) -> None:
        self.job = job
        self.group_id = group_id  # whose share of the model's queue the job also counts against
        self.waits_for_worker = waits_for_worker  # its model scales to zero: no live worker is no failure
        self.awaits_first_worker = False  # queued while no worker was live (one is starting for it)
        self.started = False
        self.finished = False
        self.position = 0
        self.delivered_pieces = 0  # backend deltas delivered so far (see Delta.pieces)
        self.attempt: int | None = None  # the run of the job whose events this handle follows
        self._last_sequence = 0
        # where the job waits in its model's fair queue: ("priority|user", "user|turn|job"), or None
        self.queued_as: tuple[str, str] | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._on_finish = on_finish

    def accepts(self, attempt: int, sequence: int) -> bool:
        """Fencing and de-duplication of published events: the handle follows the first run (attempt) that
        publishes and drops every other run's events (a stalled worker that woke up beside its re-run), and
        drops an event whose sequence number it has seen (a batch re-sent after a timeout). Verdicts about the
        job (attempt 0: its worker was lost) are always taken; so are events without numbers (older workers)."""
        if attempt == 0:
            return True
        if self.attempt is None:
            self.attempt = attempt
        if attempt != self.attempt or (sequence and sequence <= self._last_sequence):
            return False
        self._last_sequence = max(self._last_sequence, sequence)
        return True

    def deliver(self, event: Event) -> None:
        """Called by the inbox reader (or the broker's watchdogs); ignored once the job has ended."""
        if self.finished:
            return
        if isinstance(event, Delta):
            self.started = True
            self.delivered_pieces += event.pieces
        else:
            self.finished = True
            self._on_finish(self)
        self._queue.put_nowait(event)

    def fail(self, error: ErrorBody) -> None:
        self.deliver(Failed(error=error))

    async def next(self) -> Event:
        return await self._queue.get()

    def ready(self) -> list[Event]:
        """Events already delivered, without waiting (lets the caller merge bursts of deltas)."""
        events: list[Event] = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events
