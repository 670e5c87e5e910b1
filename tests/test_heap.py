"""The objects a process made while starting stay out of the garbage collector's full passes."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
import modelport.gateway.app, modelport.workers.launch
from modelport.heap import freeze_startup_objects
before = len(gc.get_objects())
freeze_startup_objects()
print(before, len(gc.get_objects()), gc.get_freeze_count())
"""


def test_a_started_process_leaves_a_full_collection_little_to_walk() -> None:
    # In a process of its own: freezing the test runner's objects would outlive this test.
    output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    before, after, frozen = map(int, output.split())
    assert before > 50_000
    assert frozen >= before * 0.9
    assert after < before / 50
