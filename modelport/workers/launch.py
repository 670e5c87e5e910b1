"""Starts a worker for one registered LLM: reads its registration from Redis (waiting while Redis holds
none), builds the backend, and runs until SIGTERM, switching to a new backend when an announced change
alters the LLM's backend or config. A worker host needs no database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid

from modelport import tracing
from modelport.heap import freeze_startup_objects
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.registrations import (
    DEFAULT_DEPLOYMENT,
    Deployment,
    NotRegistered,
    Registration,
    worker_name,
)
from modelport.workers.backends.registry import build_backend
from modelport.workers.backends.upstream_policy import UpstreamPolicy
from modelport.workers.broker import WorkerBroker
from modelport.workers.metrics import WorkerMetrics
from modelport.workers.runtime import Worker
from modelport.workers.settings import WorkerSettings

log = logging.getLogger(__name__)
REGISTRATION_POLL_S = 1.0


async def run_worker(settings: WorkerSettings, llm_name: str, deployment: str = DEFAULT_DEPLOYMENT) -> None:
    tracing.configure("modelport-worker")
    try:
        await _serve_llm(settings, llm_name, deployment)
    finally:
        tracing.flush()


async def _serve_llm(settings: WorkerSettings, llm_name: str, deployment: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker_id = worker_name(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}", deployment)
    broker = WorkerBroker(settings.redis_target(), llm_name, worker_id, lease_ms=settings.lease_ms,
                          max_attempts=settings.max_attempts)
    registration = await wait_for_registration(broker, stop)
    if registration is None:
        await broker.close()
        return
    serving = registration.deployment(deployment)  # NotRegistered (a clear exit) for an unknown name
    metrics = WorkerMetrics(llm_name, deployment)
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    policy = settings.upstream_policy()
    worker = Worker(broker, build_backend(serving.backend, serving.config, policy, serving.kind),
                    heartbeat_s=settings.heartbeat_s, drain_s=settings.drain_s, metrics=metrics)
    worker.cools_down = bool(registration.deployments)
    announced = asyncio.Event()
    broker.on_announcement = announced.set
    following = asyncio.create_task(follow_registration(worker, deployment, serving, announced, policy))
    freeze_startup_objects()
    try:
        await worker.run(stop)
    finally:
        following.cancel()


async def wait_for_registration(broker: WorkerBroker, stop: asyncio.Event) -> Registration | None:
    """The LLM's registration once Redis has one (None if stopped first); raises NotRegistered when
    Redis lists the registered LLMs and this is not one of them."""
    warned = False
    while not stop.is_set():
        try:
            registration = await broker.registration()
        except QUEUE_ERRORS:
            registration = None
        if registration is not None:
            return registration
        if not warned:
            log.warning("waiting for the registration of %s: Redis is unreachable or holds no LLM "
                        "registrations yet (any gateway restores them when it connects)", broker.model)
            warned = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REGISTRATION_POLL_S)
    return None


async def follow_registration(worker: Worker, deployment: str, current: Deployment, announced: asyncio.Event,
                              policy: UpstreamPolicy) -> None:
    """After each announced change, switch to a new backend if the deployment's backend or config changed."""
    name = f"{worker.broker.model} ({deployment})"
    while True:
        await announced.wait()
        announced.clear()
        try:
            registration = await worker.broker.registration()
            latest = registration.deployment(deployment) if registration is not None else None
            worker.cools_down = registration is not None and bool(registration.deployments)
        except NotRegistered:
            log.warning("%s is no longer registered; serving on until stopped", name)
            continue
        except QUEUE_ERRORS:
            continue
        if latest is None or latest == current:
            continue
        try:
            await worker.replace_backend(build_backend(latest.backend, latest.config, policy, latest.kind))
        except Exception:  # a config the backend cannot start with must not stop the worker
            log.exception("could not switch %s to its new config; serving on with the old one", name)
            continue
        current = latest
        log.info("%s now serves with its new config", name)
