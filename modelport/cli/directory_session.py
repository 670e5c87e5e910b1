"""How the CLI's directory commands reach the database (a change is announced after it commits, a read is
not) and print what they read: a plain table, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.announcements import announce_change
from modelport.db import queries
from modelport.db.engine import create_engine, session_factory
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.registrations import Registration
from modelport.settings import CommonSettings

log = logging.getLogger(__name__)
ACTOR = "cli"
MAX_CELL = 48


async def read(settings: CommonSettings, action: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            return await action(session)
    finally:
        await engine.dispose()


async def in_session(settings: CommonSettings, action: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """Run one directory change and announce it (gateways drop their caches, workers' registrations are
    mirrored)."""
    async def change(session: AsyncSession) -> tuple[Any, list[Registration]]:
        return await action(session), await queries.registrations(session)

    result, registered = await read(settings, change)
    try:
        await announce_change(settings.redis_target(), registered)
    except QUEUE_ERRORS:
        log.warning("could not reach Redis to announce the change; gateways will see it within their cache TTL")
    return result


def add_verb(verbs: Any, name: str, run: Any, about: str, *positional: str, json_flag: bool = False
          ) -> argparse.ArgumentParser:
    """A subcommand (a verb of an object) with its positional arguments and handler."""
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=about)
    for argument in positional:
        parser.add_argument(argument)
    if json_flag:
        add_json_flag(parser)
    parser.set_defaults(run=run)
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON (stable keys, see the README)")
    return parser


def cell(value: Any, most: int = MAX_CELL) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ",".join(str(item) for item in value) or "-"
    elif isinstance(value, dict):
        text = ",".join(f"{key}={item}" for key, item in value.items()) or "-"
    else:
        text = str(value)
    return text if len(text) <= most else text[:most - 1] + "…"


def print_table(records: Sequence[dict[str, Any]], columns: Sequence[str], empty: str) -> None:
    """Rows under a header, columns padded to their widest cell; ``empty`` says what to do when there is none."""
    if not records:
        print(empty)
        return
    rows = [[column.upper() for column in columns], *([cell(record[column]) for column in columns]
                                                      for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip())


def print_record(record: dict[str, Any]) -> None:
    """One object, a field per line."""
    width = max(len(key) for key in record)
    for key, value in record.items():
        nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(item, dict) for item in value))
        print(f"{key.ljust(width)}  {json.dumps(value, ensure_ascii=False) if nested else cell(value, most=4096)}")


def emit(args: argparse.Namespace, found: Any, columns: Sequence[str] = (), empty: str = "") -> None:
    """What a read command found: JSON with ``--json``; else a table (a list) or a field per line (one)."""
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    elif isinstance(found, list):
        print_table(found, columns, empty)
    else:
        print_record(found)
