"""Logging for every ModelPort process: readable lines on stderr, the access log as bare JSON lines on stdout."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Idempotent, so that processes uvicorn spawns for ``--workers N`` can call it again."""
    access = logging.getLogger("modelport.access")
    if access.handlers:
        return
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
