"""Admission to the WSGI thread pool by queue delay: a Flask-bound request waits for a
thread as long as it can start within `max_wait` seconds; one that cannot is shed at once.

The pool is only as long as its threads: the gateway lets at most `threads` requests into
a2wsgi, so each one it admits starts on a thread at once, and the queue is the gateway's,
where it can be measured. What is measured, rather than guessed from a count:

- the service time, an exponentially weighted mean of how long each request held its
  thread; with every thread busy, one frees every `service / threads` seconds on average,
  so a request with `n` requests queued ahead of it expects to wait `(n + 1)` such gaps;
- progress, the last time a thread freed (or the pool filled): when none has freed for
  longer than `max_wait` and twice the service time, the pool is stalled (every thread is
  stuck, say on a hung agent) and no new request is expected to start in time;
- each request's sojourn time, from queueing to its thread (CoDel's measure), as a metric.

A request that is predicted to start within `max_wait` waits, FIFO; if it is still
waiting when `max_wait` has passed (the prediction was wrong), it is shed then. So no
Flask-bound request waits longer than `max_wait` for a thread, whatever the prediction.
A queued request whose client disconnects leaves the queue and is never started.

All calls happen on the event loop's thread, so plain counters are safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

Waited = Literal["started", "late", "gone"]
"""How a wait ended: holding a thread, past `max_wait` (shed), or the client left first."""

SERVICE_WEIGHT = 0.1
"""The weight of the newest service time in the running mean (about the last 20 count)."""


class Admission:
    """Hands out the WSGI pool's `threads`, FIFO, to requests that can start in time."""

    def __init__(
        self,
        threads: int,
        max_wait: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        observe_wait: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.threads = threads
        self.max_wait = max_wait
        self.busy = 0
        """Threads held by requests (each one running in a2wsgi, or about to)."""
        self.service = 0.0
        """The running mean of how long a request holds a thread, in seconds."""
        self._queue: deque[asyncio.Future[None]] = deque()
        self._clock = clock
        self._observe_wait = observe_wait
        self._progress = clock()

    @property
    def waiting(self) -> int:
        """Requests queued for a thread."""
        return len(self._queue)

    def has_room(self) -> bool:
        """Whether `try_start` would take a thread now."""
        return self.busy < self.threads and not self._queue

    def try_start(self) -> bool:
        """Takes a free thread when one is free and nobody is queued for it; whether it
        did. The request then holds it until `finish`."""
        if not self.has_room():
            return False
        self.busy += 1
        if self.busy == self.threads:
            self._progress = self._clock()  # full from now: the stall clock starts
        return True

    def predicted_wait(self) -> float:
        """How long a request queued now would wait for a thread (infinite when stalled)."""
        gap = self.service / self.threads
        if self._clock() - self._progress > max(self.max_wait, 2 * self.service):
            return float("inf")
        return (len(self._queue) + 1) * gap

    def can_wait(self) -> bool:
        """Whether a request that found no free thread should queue rather than be shed."""
        return self.predicted_wait() <= self.max_wait

    async def wait(self, gone: Awaitable[object]) -> Waited:
        """Queues for a thread until one is handed over, `max_wait` passes, or `gone`
        (the client's disconnect) completes, whichever comes first. "started": the
        caller holds a thread and must `finish` it."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        queued = self._clock()
        left = asyncio.ensure_future(gone)
        try:
            await asyncio.wait((turn, left), timeout=self.max_wait, return_when="FIRST_COMPLETED")
        except BaseException:  # cancelled (the server is stopping): a thread is passed on
            self._leave(turn)
            raise
        finally:
            left.cancel()
        if left.done() and not left.cancelled():
            left.exception()  # retrieved: a receive that failed means the client is gone too
            self._leave(turn)
            return "gone"
        if not self._leave(turn, keep=True):
            return "late"
        self._observe_wait(self._clock() - queued)
        return "started"

    def _leave(self, turn: asyncio.Future[None], *, keep: bool = False) -> bool:
        """Out of the queue; whether the request holds a thread (only ever with `keep`:
        otherwise a thread handed over is passed on)."""
        if turn.done() and not turn.cancelled():
            if keep:
                return True
            self._hand_over()
        else:
            turn.cancel()
            with contextlib.suppress(ValueError):  # already out of the queue
                self._queue.remove(turn)
        return False

    def finish(self, seconds: float) -> None:
        """The thread held for `seconds` is free: measured, and handed to the next."""
        self.service += SERVICE_WEIGHT * (seconds - self.service)
        self._hand_over()

    def _hand_over(self) -> None:
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)  # the thread passes on: `busy` stays, still full
                self._progress = self._clock()
                return
        # Not full any more: `try_start` restarts the stall clock when it fills again.
        self.busy -= 1
