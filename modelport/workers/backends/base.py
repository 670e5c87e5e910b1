"""The contract every model backend fulfils: stream deltas for one chat or completion request, then the
usage; or embed one request's inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from modelport.protocol.envelope import Delta, GenerationParams, Usage


@dataclass
class Embedded:
    """One embedding job's vectors (``protocol.vectors.pack``ed, in input order) and the tokens it read."""

    vectors: list[str]
    usage: Usage


class Backend(Protocol):
    """One model, ready to serve; ``stream`` and ``embed`` may be called concurrently up to ``concurrency``
    times."""

    concurrency: int

    async def start(self) -> None: ...

    def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        """Yield a chat's or a completion's deltas as the model produces them and at most one Usage, last.

        Cancelling the consuming task must stop generation; errors are raised as ModelPortError.
        """
        ...

    async def embed(self, params: GenerationParams) -> Embedded:
        """Every one of ``params.input``'s vectors; a backend without embeddings raises InvalidRequest."""
        ...

    async def close(self) -> None: ...
