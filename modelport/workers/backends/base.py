"""The contract every model backend fulfils: stream deltas for one request, then the usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from modelport.protocol.envelope import Delta, GenerationParams, Usage


class Backend(Protocol):
    """One model, ready to serve; ``stream`` may be called concurrently up to ``concurrency`` times."""

    concurrency: int

    async def start(self) -> None: ...

    def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Usage]:
        """Yield deltas as the model produces them and at most one Usage, last.

        Cancelling the consuming task must stop generation; errors are raised as ModelPortError.
        """
        ...

    async def close(self) -> None: ...
