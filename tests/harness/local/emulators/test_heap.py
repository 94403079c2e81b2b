"""The emulators' processes keep their heap frozen, so full collections stay short."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from harness.local.emulators.heap import frozen_heap


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_the_heap_is_frozen_again_and_again_while_the_block_runs_then_unfrozen() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap(every_s=0.01):
        _wait_until(lambda: gc.get_freeze_count() > 0, "the heap was not frozen")
        first = gc.get_freeze_count()
        # Allocated after the first freeze: frozen by a later one, not left to collections.
        items = [[n] for n in range(20_000)]
        grown = first + len(items)
        _wait_until(lambda: gc.get_freeze_count() >= grown, "not frozen again")
    assert gc.get_freeze_count() == 0
    assert "frozen-heap" not in {thread.name for thread in threading.enumerate()}
    assert len(items) == 20_000  # alive throughout
