"""Admission to the WSGI pool by queue delay, on a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from harness.gateway.admission import Admission, Waited


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _admission(threads: int, max_wait: float = 2.0) -> tuple[Admission, Clock]:
    clock = Clock()
    return Admission(threads, max_wait, clock=clock), clock


def _never() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def _run(scenario: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def test_free_threads_are_taken_at_once_and_given_back() -> None:
    admission, _ = _admission(2)
    assert admission.has_room()
    assert [admission.try_start() for _ in range(3)] == [True, True, False]
    assert not admission.has_room()  # what the gateway asks before streaming a body
    assert admission.busy == 2
    admission.finish(0.1)
    assert admission.busy == 1
    assert admission.try_start()


def test_queued_requests_get_threads_first_in_first_out() -> None:
    admission, _ = _admission(1)
    waits: list[float] = []
    admission._observe_wait = waits.append

    async def scenario() -> list[tuple[str, Waited]]:
        assert admission.try_start()
        ended: list[tuple[str, Waited]] = []

        async def wait(name: str) -> None:
            ended.append((name, await admission.wait(_never())))

        tasks = [asyncio.create_task(wait(name)) for name in ("first", "second", "third")]
        await asyncio.sleep(0)  # all three queued
        assert admission.waiting == 3
        assert not admission.try_start()  # nobody jumps the queue, free thread or not
        admission.busy = 0
        assert not admission.has_room()  # nor is there room while anyone is queued
        admission.busy = 1
        for _ in range(3):
            admission.finish(0.1)  # the thread passes to the next in line
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert (admission.busy, admission.waiting) == (1, 0)
        return ended

    assert _run(scenario) == [("first", "started"), ("second", "started"), ("third", "started")]
    assert waits == [0.0, 0.0, 0.0]  # the clock did not move


def test_predicted_wait_is_the_queue_ahead_times_the_measured_gap() -> None:
    admission, _ = _admission(4, max_wait=2.0)
    for _ in range(4):
        assert admission.try_start()
    for _ in range(40):  # a thread is held for a second: one frees every 0.25 s
        admission.finish(1.0)
        assert admission.try_start()
    assert admission.service == pytest.approx(1.0, rel=0.02)
    assert admission.predicted_wait() == pytest.approx(0.25, rel=0.02)
    admission.service = 1.0  # exactly, for the boundary below

    async def scenario() -> None:
        tasks = [asyncio.create_task(admission.wait(_never())) for _ in range(7)]
        await asyncio.sleep(0)
        # Seven ahead: the eighth would start after 2 s, just in time; the ninth, 2.25 s.
        assert admission.predicted_wait() == 2.0
        assert admission.can_wait()
        tasks.append(asyncio.create_task(admission.wait(_never())))
        await asyncio.sleep(0)
        assert admission.predicted_wait() == 2.25
        assert not admission.can_wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (admission.waiting, admission.busy) == (0, 4)

    _run(scenario)


def test_a_pool_where_no_thread_frees_for_the_maximum_wait_is_stalled() -> None:
    admission, clock = _admission(2, max_wait=2.0)
    assert admission.try_start() and admission.try_start()
    assert admission.can_wait()  # full, but only just
    clock.now += 1.9
    assert admission.can_wait()
    clock.now += 0.2  # 2.1 s full with no thread freed: every thread is stuck
    assert admission.predicted_wait() == float("inf")
    assert not admission.can_wait()
    admission.finish(2.1)  # one frees: progress again
    assert admission.try_start()
    assert admission.can_wait()


def test_slow_but_moving_requests_are_not_a_stall() -> None:
    # Requests that hold a thread 3 s (longer than the maximum wait) fill the pool at
    # once: 2.5 s later none has freed yet, which is their normal pace, not a stall.
    admission, clock = _admission(64, max_wait=2.0)
    admission.service = 3.0
    for _ in range(64):
        assert admission.try_start()
    clock.now += 2.5
    assert admission.predicted_wait() == pytest.approx(3.0 / 64)
    assert admission.can_wait()
    clock.now += 4.0  # past twice the service time: stalled after all
    assert not admission.can_wait()


def test_a_wait_that_runs_out_is_late_and_leaves_the_queue() -> None:
    admission, _ = _admission(1, max_wait=0.05)

    async def scenario() -> Waited:
        assert admission.try_start()
        return await admission.wait(_never())

    assert _run(scenario) == "late"
    assert (admission.waiting, admission.busy) == (0, 1)
    admission.finish(0.1)  # the thread is free again: nobody holds a stale turn
    assert admission.busy == 0


@pytest.mark.parametrize(
    "thread_freed_first",
    [False, True],
    ids=["left-while-queued", "left-as-the-thread-was-handed-over"],
)
def test_a_client_that_leaves_while_queued_is_never_started(thread_freed_first: bool) -> None:
    admission, _ = _admission(1)

    async def scenario() -> tuple[Waited, Waited]:
        assert admission.try_start()
        gone = _never()
        leaving = asyncio.create_task(admission.wait(gone))
        staying = asyncio.create_task(admission.wait(_never()))
        await asyncio.sleep(0)
        if thread_freed_first:
            # In the same step: the thread goes to the first in line, whose client has
            # left; it passes to the next.
            admission.finish(0.1)
            gone.set_result(None)
            return await leaving, await staying
        gone.set_result(None)
        assert await leaving == "gone"
        assert admission.waiting == 1
        admission.finish(0.1)
        return "gone", await staying

    assert _run(scenario) == ("gone", "started")
    assert (admission.busy, admission.waiting) == (1, 0)


def test_a_cancelled_waiter_passes_its_thread_on() -> None:
    admission, _ = _admission(1)

    async def scenario() -> Waited:
        assert admission.try_start()
        cancelled = asyncio.create_task(admission.wait(_never()))
        staying = asyncio.create_task(admission.wait(_never()))
        await asyncio.sleep(0)
        admission.finish(0.1)  # handed to `cancelled`, which is cancelled before it runs
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return await staying

    assert _run(scenario) == "started"
    assert (admission.busy, admission.waiting) == (1, 0)
