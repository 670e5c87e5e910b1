"""Starts a worker for one registered LLM: reads its registration from Redis (waiting while Redis holds
none), builds the backend, runs until SIGTERM. A worker host needs no database."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

from modelport.protocol.connection import QUEUE_ERRORS, redis_client
from modelport.protocol.registrations import Registration, lookup
from modelport.protocol.worker_broker import WorkerBroker
from modelport.workers.backends.registry import build_backend
from modelport.workers.metrics import WorkerMetrics
from modelport.workers.runtime import Worker
from modelport.workers.settings import WorkerSettings

log = logging.getLogger(__name__)
REGISTRATION_POLL_S = 1.0


async def run_worker(settings: WorkerSettings, llm_name: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    registration = await wait_for_registration(settings.redis_url, llm_name, stop)
    if registration is None:
        return
    backend = build_backend(registration.backend, registration.config)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker = WorkerBroker(settings.redis_url, registration.name, worker_id, lease_ms=settings.lease_ms,
                          max_attempts=settings.max_attempts)
    metrics = WorkerMetrics(registration.name)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    await Worker(broker, backend, heartbeat_s=settings.heartbeat_s, drain_s=settings.drain_s,
                 metrics=metrics).run(stop)


async def wait_for_registration(redis_url: str, llm_name: str, stop: asyncio.Event) -> Registration | None:
    """The LLM's registration once Redis has one (None if stopped first); raises NotRegistered when
    Redis lists the registered LLMs and this is not one of them."""
    client = redis_client(redis_url, connections=1, name=f"mp-worker-start-{os.getpid()}")
    warned = False
    try:
        while not stop.is_set():
            try:
                registration = await lookup(client, llm_name)
            except QUEUE_ERRORS:
                registration = None
            if registration is not None:
                return registration
            if not warned:
                log.warning("waiting for the registration of %s: Redis is unreachable or holds no LLM "
                            "registrations yet (any gateway restores them when it connects)", llm_name)
                warned = True
            await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=REGISTRATION_POLL_S)
        return None
    finally:
        await client.aclose()
