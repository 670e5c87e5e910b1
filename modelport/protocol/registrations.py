"""The LLM registrations workers start from, mirrored from the database into one Redis hash by whoever
changes them (``broker.announcements``), so a worker host needs only Redis and its model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

DEFAULT_DEPLOYMENT = "default"


def worker_name(process: str, deployment: str) -> str:
    """A worker's id (its consumer name and heartbeat member): ``host-pid-random@deployment``."""
    return f"{process}@{deployment}"


def deployment_of(worker: str) -> str:
    return worker.rpartition("@")[2] if "@" in worker else DEFAULT_DEPLOYMENT


class Deployment(BaseModel):
    backend: str
    config: dict[str, Any]
    kind: Literal["chat", "embedding"] = "chat"  # the LLM's: generates text, or embeds



class Registration(BaseModel):
    """An LLM: its own backend and config (the deployment ``default``) and any further deployments, each
    served by workers started with ``--deployment NAME`` from the LLM's one queue."""

    name: str
    backend: str
    config: dict[str, Any]
    enabled: bool = True
    deployments: dict[str, Deployment] = {}
    kind: Literal["chat", "embedding"] = "chat"

    def deployment(self, name: str) -> Deployment:
        if name == DEFAULT_DEPLOYMENT:
            return Deployment(backend=self.backend, config=self.config, kind=self.kind)
        if name not in self.deployments:
            raise NotRegistered(f"{self.name} has no deployment named {name!r}")
        return self.deployments[name].model_copy(update={"kind": self.kind})


class NotRegistered(LookupError):
    """The mirror is there and does not list the LLM: a worker for it has nothing to serve."""
