"""``modelport status``: per model its live workers, queue depth, oldest wait and last minute's requests and
errors, and the gateways' heartbeats; once, as JSON, or refreshed every second (``--watch``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.status import StatusReader, with_usage
from modelport.cli.directory_session import add_verb, print_table
from modelport.db import listing
from modelport.db.engine import create_engine, session_factory
from modelport.settings import CommonSettings

CLEAR_SCREEN = "\033[H\033[2J"


async def system_status(sessions: async_sessionmaker[AsyncSession], reader: StatusReader) -> dict[str, Any]:
    """The live view of Redis joined with the database's list of LLMs and last minute's usage rows."""
    async with sessions() as session:
        llms, recent = await listing.status_rows(session)
    return with_usage(await reader.read([llm["name"] for llm in llms]), llms, recent)


def print_status(status: dict[str, Any]) -> None:
    models = [{**model, "live_workers": len(model["workers"])} for model in status["models"]]
    print_table(models, ("name", "enabled", "live_workers", "running", "queue_depth", "oldest_wait_s",
                         "requests_last_minute", "errors_last_minute"),
                "No LLMs registered: `modelport llm add NAME --backend …`.")
    workers = [{**worker, "model": model["name"]} for model in status["models"] for worker in model["workers"]]
    print()
    print_table(workers, ("model", "deployment", "host", "pid", "heartbeat_age_s", "running"),
                "No live workers: start one with `modelport worker LLM`.")
    print()
    print_table(status["gateways"], ("host", "pid", "heartbeat_age_s"),
                "No gateway has sent a heartbeat in the last minute: start one with `modelport gateway`.")


async def status(settings: CommonSettings, args: argparse.Namespace) -> None:
    """One view, or (``--watch``) one a second over the same database and Redis connections."""
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    reader = StatusReader(settings.redis_target())
    try:
        while True:
            found = await system_status(sessions, reader)
            if args.json:
                print(json.dumps(found, indent=None if args.watch else 2), flush=True)
            else:
                print(CLEAR_SCREEN if args.watch else "", end="")
                print_status(found)
            if not args.watch:
                return
            await asyncio.sleep(1.0)
    finally:
        await reader.aclose()
        await engine.dispose()


def add_status_parser(commands: Any) -> None:
    parser = add_verb(commands, "status", status, "live workers, queues and gateways", json_flag=True)
    parser.add_argument("--watch", action="store_true", help="refresh every second (with --json: a line each)")
