"""Keeping a long-running emulator's heap out of the garbage collector's full passes.

moto holds every DynamoDB item as Python objects. Each full collection walks all of them:
with 17 000 ten-turn sessions one took 0.4 s, during which the one interpreter serving
the store answers nothing, so a 10-minute soak saw the store stall for longer and longer
(store timeouts, Flask threads piling up behind them, the gateway shedding) as the table
grew. `gc.freeze()` moves what is alive into a generation no collection visits; done
every few seconds, a full collection only walks what was allocated since. Objects frozen
are still freed when their last reference goes; only reference cycles among them are
kept, which a server process holding its data until it exits can afford.

For the emulators' own processes (`python -m harness.local.emulators`, `make run`, the
load test's), not for a test process sharing its heap with everything else.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

FREEZE_EVERY_S = 5.0


@contextlib.contextmanager
def frozen_heap(every_s: float = FREEZE_EVERY_S) -> Iterator[None]:
    """Freezes the heap now and every `every_s` seconds until the block ends, then
    unfreezes it."""
    stop = threading.Event()

    def keep_frozen() -> None:
        while True:
            gc.freeze()
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=keep_frozen, name="frozen-heap", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        gc.unfreeze()
