"""The LLM registrations workers start from, mirrored from the database into one Redis hash by whoever
changes them (``broker.announcements``), so a worker host needs only Redis and its model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Registration(BaseModel):
    name: str
    backend: str
    config: dict[str, Any]
    enabled: bool = True


class NotRegistered(LookupError):
    """The mirror is there and does not list the LLM: a worker for it has nothing to serve."""
