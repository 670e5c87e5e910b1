"""A gateway's inbox: the one stream every worker publishes this gateway's jobs' events to, read in
batches by one blocking reader that hands each event to its job's handle, fenced and de-duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from modelport.broker.job_handle import JobHandle
from modelport.protocol import keys, scripts
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.envelope import ENVELOPE_VERSION, EVENT_ADAPTER, Event, decode_batch, decode_event
from modelport.protocol.errors import NoWorker, UpstreamError

log = logging.getLogger(__name__)

INBOX_TTL_MS = 60_000
READ_BATCH = 1024
READ_BLOCK_MS = 1000
TRIM_INTERVAL_S = 0.5


class Inbox:
    def __init__(self, reader: Redis, commands: Redis, gateway_id: str, handle_of: Callable[[str], JobHandle | None],
                 on_lost: Callable[[NoWorker], None]) -> None:
        self.key = keys.inbox(gateway_id)
        self._reader = reader
        self._commands = commands
        self._handle_of = handle_of
        self._on_lost = on_lost
        self._keep = commands.register_script(scripts.KEEP_INBOX)
        self._last_id = "0-0"
        self._trimmed_at = 0.0
        self.closing = False

    async def keep(self) -> None:
        """Create the inbox, or keep it from expiring (a gateway that dies leaves it to expire)."""
        await self._keep(keys=[self.key], args=[INBOX_TTL_MS])

    async def delete(self) -> None:
        await self._commands.delete(self.key)

    async def read(self) -> None:
        """Read until ``closing`` is set (seen when a blocking read returns, within ``READ_BLOCK_MS``); when
        the connection is lost, every job this gateway follows fails, since their events may be lost too."""
        while not self.closing:
            try:
                await self._read_batch()
            except QUEUE_ERRORS:
                log.warning("lost the job queue connection; failing the jobs this gateway follows")
                self._on_lost(NoWorker("The connection to the job queue was lost.", code="queue_unavailable"))
                await asyncio.sleep(0.5)
                with contextlib.suppress(*QUEUE_ERRORS):
                    await self.keep()

    async def _read_batch(self) -> None:
        reply: Any = await self._reader.xread({self.key: self._last_id}, count=READ_BATCH, block=READ_BLOCK_MS)
        if not reply:
            return
        entries = reply[0][1]
        for _entry_id, fields in entries:
            self._dispatch(fields)
        self._last_id = entries[-1][0].decode()
        await asyncio.sleep(0)
        if time.monotonic() - self._trimmed_at > TRIM_INTERVAL_S:
            self._trimmed_at = time.monotonic()
            await self._commands.xtrim(self.key, minid=self._last_id, approximate=True)

    def _dispatch(self, fields: dict[bytes, bytes]) -> None:
        """One inbox entry: a batch of events (see protocol.envelope) or a single one."""
        same_version = int(fields.get(b"v", b"0")) == ENVELOPE_VERSION
        batch = fields.get(b"b")
        if batch is None:
            self._deliver(fields.get(b"j", b"").decode(), int(fields.get(b"a", b"0")), int(fields.get(b"s", b"0")),
                          same_version, lambda: decode_event(fields[b"e"]))
            return
        try:
            records = decode_batch(batch)
        except ValueError:  # nothing in it can be told apart: its jobs end at their deadlines
            log.error("an event batch could not be read")
            return
        for job_id, attempt, sequence, event in records:
            self._deliver(job_id, attempt, sequence, same_version, partial(EVENT_ADAPTER.validate_python, event))

    def _deliver(self, job_id: str, attempt: int, sequence: int, same_version: bool,
                 decode: Callable[[], Event]) -> None:
        """Hand a job's event to its handle (fenced and de-duplicated), decoded only when it is taken."""
        handle = self._handle_of(job_id)
        if handle is None:
            return
        if not same_version:
            handle.fail(NoWorker("The worker speaks another envelope version.", code="version_mismatch").body())
            return
        if handle.accepts(attempt, sequence):
            try:
                event = decode()
            except ValidationError:  # that job fails; the reader goes on for every other one
                log.error("an event of job %s could not be read", handle.job.id)
                handle.fail(UpstreamError("The worker sent an event this gateway cannot read.",
                                          code="bad_event").body())
                return
            handle.deliver(event)
