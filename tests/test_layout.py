"""The house rules a newcomer relies on, checked on the tree: no module over 300 lines; Redis is spoken only
by the broker modules of each side and SQL only in ``db/``."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "modelport"
REDIS_OWNERS = ("broker/", "workers/broker.py", "workers/outbox.py", "protocol/connection.py")
REDIS_USE = re.compile(r"^\s*(from redis\b|import redis\b)|\bredis_client\(|\.register_script\(|\.pipeline\(",
                       re.MULTILINE)
SQL_USE = re.compile(r"\bselect\(|\btext\(|(?<![.\w])session\.(get|add|add_all|exec|execute|delete|commit|flush|"
                     r"connection)\(|^\s*from sqlmodel import|^\s*from sqlalchemy import", re.MULTILINE)


def modules() -> dict[str, str]:
    return {path.relative_to(PACKAGE).as_posix(): path.read_text() for path in PACKAGE.rglob("*.py")}


def test_no_module_is_over_300_lines() -> None:
    long = {name: text.count("\n") for name, text in modules().items() if text.count("\n") > 300}
    assert not long


def test_redis_is_spoken_only_by_the_broker_modules() -> None:
    speaking = {name for name, text in modules().items() if REDIS_USE.search(text)}
    assert speaking, "the pattern finds the owners themselves"
    assert {name for name in speaking if not name.startswith(REDIS_OWNERS)} == set()


def test_sql_is_written_only_in_db() -> None:
    writing = {name for name, text in modules().items() if SQL_USE.search(text)}
    assert writing, "the pattern finds db/ itself"
    assert {name for name in writing if not name.startswith("db/")} == set()
