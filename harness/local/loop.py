"""An asyncio server run on its own event loop in a daemon thread, for synchronous callers
(tests, the dev runner, WSGI stacks). Subclasses say how to serve; this runs it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Self

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def fast_loop_factory() -> LoopFactory:
    """uvloop's event loop when it is installed (it comes with uvicorn[standard], as the
    servers use it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class LoopThread:
    """`start()` returns the url once the server accepts connections and re-raises what
    stopped it from starting; `stop()` ends it and joins the thread (safe to call twice).
    Usable as a context manager. Subclasses give `serving()` (an async context manager
    that serves while open), `url`, and `thread_name`; `loop_factory` makes the event loop
    (asyncio's by default)."""

    thread_name = "loop-thread"

    def __init__(self, *, loop_factory: LoopFactory | None = None) -> None:
        self._loop_factory = loop_factory
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def serving(self) -> AbstractAsyncContextManager[None]:
        """Serve from entry to exit, on the thread's event loop."""
        raise NotImplementedError

    def start(self) -> str:
        """Start the thread and the server; returns the url once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and join the thread (safe to call twice)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(self._main())
        except BaseException as error:  # handed to start(), which re-raises it
            self._error = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with self.serving():
            self._ready.set()
            await self._stopping.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
