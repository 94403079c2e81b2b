"""The gateway's background tasks (the rollout's poll, the fleet's flush, the controller,
the workers' snapshots): how each one ends."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["cancel"]


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait for it to end; nothing for None. Its cancellation is not
    raised here (the caller asked for it), any other error is."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
