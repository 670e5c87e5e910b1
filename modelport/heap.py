"""What a long-running process does with the objects it made while starting (modules, settings, compiled
schemas, the catalog): keeps them out of the garbage collector's full passes."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what starting left behind, then move every object still alive to the collector's permanent
    generation. A full collection walks every tracked object and holds the event loop meanwhile: measured on
    the gateway and on a worker, 40-70 ms with the startup objects in it (every stream the process served
    stalled that long, several times a second under load), under 10 ms without them. Objects made later are
    collected as before."""
    gc.collect()
    gc.freeze()
