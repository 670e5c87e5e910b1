"""Waiting for an observable condition, never for a fixed time: a slow machine only makes tests slower."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.05


def until(condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``condition`` until it returns something true, and return that; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not so after {timeout} s")
        time.sleep(POLL_S)


async def until_async(condition: Callable[[], Awaitable[T]], what: str, timeout: float = 20.0) -> T:
    """``until`` for an event loop, with a condition to await."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not so after {timeout} s")
        await asyncio.sleep(POLL_S)
