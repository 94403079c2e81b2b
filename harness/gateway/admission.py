"""Admission in front of the WSGI thread pool: which Flask-bound requests may wait for a
thread, and which are shed at once."""

from __future__ import annotations

from collections.abc import Callable


class PoolGuard:
    """Bounds the requests in front of the WSGI thread pool: beyond its threads plus a
    short queue, Flask-bound requests are shed at once rather than queued into timeouts.
    All calls happen on the event loop's thread, so a plain counter is safe."""

    def __init__(
        self, threads: int, queue: int, on_change: Callable[[int], None] = lambda n: None
    ) -> None:
        self.capacity = threads + queue
        self.in_use = 0
        self._on_change = on_change

    def acquire(self) -> bool:
        """Takes a slot if one is free; whether it did. Each taken slot is released once."""
        if self.in_use >= self.capacity:
            return False
        self.in_use += 1
        self._on_change(self.in_use)
        return True

    def release(self) -> None:
        self.in_use -= 1
        self._on_change(self.in_use)
