"""The deadline and the retry schedule, as pure functions at their boundaries."""

from __future__ import annotations

import pytest

from shared.deadline import Deadline, RetryPolicy, Timeouts

POLICY = RetryPolicy(timeout=3.0, max_attempts=3, connect_timeout=1.0)


@pytest.mark.parametrize(
    ("now", "left"),
    [(100.0, 3.0), (102.5, 0.5), (103.0, 0.0), (103.5, 0.0)],
)
def test_time_left_runs_down_to_zero_and_stays_there(now: float, left: float) -> None:
    deadline = Deadline.after(3.0, clock=lambda: 100.0)
    assert Deadline(deadline.at, clock=lambda: now).left() == left


@pytest.mark.parametrize(
    ("left", "timeouts"),
    [
        (3.0, Timeouts(connect=1.0, read=3.0)),  # the first attempt: the whole deadline
        (1.0, Timeouts(connect=1.0, read=1.0)),
        (0.25, Timeouts(connect=0.25, read=0.25)),  # connecting may not outlast it either
        (0.0, None),  # exactly at the deadline: no attempt
        (-0.5, None),
    ],
)
def test_an_attempt_may_take_the_time_left_and_no_more(
    left: float, timeouts: Timeouts | None
) -> None:
    assert POLICY.timeouts(left) == timeouts


@pytest.mark.parametrize(
    ("failures", "draw", "wait"),
    [(1, 0.0, 0.0), (1, 0.5, 0.5), (2, 0.5, 1.0), (3, 0.5, 2.0), (5, 0.5, 8.0), (6, 0.5, 10.0)],
)
def test_backoff_is_botocores_capped_exponential_with_jitter(
    failures: int, draw: float, wait: float
) -> None:
    assert POLICY.backoff(failures, draw) == wait


@pytest.mark.parametrize(
    ("failures", "retryable", "left", "draw", "wait"),
    [
        (1, True, 2.0, 0.5, 0.5),
        (2, True, 2.0, 0.5, 1.0),
        (1, False, 2.0, 0.5, None),  # not worth a retry
        (3, True, 2.0, 0.5, None),  # the attempts are used up
        (1, True, 0.5, 0.5, None),  # the wait would end exactly at the deadline
        (1, True, 0.500001, 0.5, 0.5),  # ... and just before it
        (2, True, 0.9, 0.5, None),  # backoff longer than the time left
        (1, True, 0.0, 0.0, None),  # no time left: not even a zero wait
        (1, True, 0.1, 0.0, 0.0),
    ],
)
def test_a_retry_waits_only_while_time_is_left(
    failures: int, retryable: bool, left: float, draw: float, wait: float | None
) -> None:
    assert POLICY.delay(failures, retryable, left, draw) == wait


def test_the_last_attempt_reads_for_exactly_the_time_left() -> None:
    # Attempt 1 fails after 1.75 s of the 3 s; with a draw of 0.5 the retry starts at 2.25 s
    # and may read until the deadline, 0.75 s later.
    wait = POLICY.delay(1, True, 3.0 - 1.75, draw=0.5)
    assert wait == 0.5
    assert POLICY.timeouts(3.0 - 1.75 - wait) == Timeouts(connect=0.75, read=0.75)
