"""Starts a worker for one registered LLM: reads its row once, builds the backend, runs until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid

from modelport.db import directory
from modelport.db.engine import create_engine, session_factory
from modelport.protocol.worker_broker import WorkerBroker
from modelport.workers.backends.registry import build_backend
from modelport.workers.metrics import WorkerMetrics
from modelport.workers.runtime import Worker
from modelport.workers.settings import WorkerSettings


async def run_worker(settings: WorkerSettings, llm_name: str) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            llm = await directory.find_llm(session, llm_name)
    finally:
        await engine.dispose()
    backend = build_backend(llm.backend, llm.config)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker = WorkerBroker(settings.redis_url, llm.name, worker_id, lease_ms=settings.lease_ms,
                          max_attempts=settings.max_attempts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = WorkerMetrics(llm.name)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    await Worker(broker, backend, heartbeat_s=settings.heartbeat_s, drain_s=settings.drain_s,
                 metrics=metrics).run(stop)
