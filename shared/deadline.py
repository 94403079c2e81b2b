"""One deadline per call: the time a whole AWS operation may take, retries included, and the
retry schedule both stacks follow within it.

Pure: the clock and the random draw are given. `shared.aws.Retrier` (boto3) and
`AsyncRetrier` (aioboto3) drive the schedule, as the session stores drive
`shared.session`'s plans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds on a monotonic clock (`time.monotonic`, or a fake in tests)."""

MAX_BACKOFF = 20.0
"""botocore's cap on one backoff (`botocore.retries.standard.ExponentialBackoff`)."""


class DeadlineExceeded(TimeoutError):
    """No time was left to start another attempt. A `TimeoutError`, so it is classified
    as every other timeout is: 504 for the agent, 503 for the store."""


@dataclass(frozen=True)
class Deadline:
    """The instant on a monotonic clock by which a whole operation must be over."""

    at: float
    clock: Clock = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        """Seconds to go; 0 once the deadline has come, never negative."""
        return max(0.0, self.at - self.clock())


@dataclass(frozen=True)
class Timeouts:
    """What one attempt may spend connecting, and on the whole of its reads."""

    connect: float
    read: float


@dataclass(frozen=True)
class RetryPolicy:
    """botocore's standard retry mode, bounded by one deadline per call.

    `timeout` bounds the whole call: connecting, every attempt, the backoffs between them
    and, for the agent, reading its event stream to the end. Each attempt may take the
    time left and no more; after a failure botocore would retry (`shared.aws.is_retryable`),
    the next attempt follows botocore's backoff (a random draw times 2 ** (failures - 1)
    seconds, at most 20), but only when that wait ends before the deadline: a wait that
    would use up the time left gives up at once with the error in hand, so a throttled
    agent still answers 503 and a failing one 502 rather than a late 504.

    Why retries of our own (botocore's are off: `total_max_attempts=1`) rather than
    botocore's with each attempt capped at timeout / attempts: botocore's retries know
    nothing of a deadline, so the cap would have to be fixed in advance, failing an agent
    that answers within the timeout in one attempt but not within its share; its read
    timeout also bounds each socket read, not the event stream, and its backoff sleeps
    whatever is left. Owning the loop lets every attempt take exactly what is left.
    """

    timeout: float
    max_attempts: int
    connect_timeout: float
    max_backoff: float = MAX_BACKOFF

    def timeouts(self, left: float) -> Timeouts | None:
        """The timeouts of an attempt started with `left` seconds to go, or None when no
        time is left to start one. The read timeout is all the time left: the last attempt
        may use the rest of the deadline, and no attempt more."""
        if left <= 0:
            return None
        return Timeouts(connect=min(self.connect_timeout, left), read=left)

    def backoff(self, failures: int, draw: float) -> float:
        """botocore's wait after the `failures`-th failed attempt, for a `draw` in [0, 1)."""
        return draw * min(2.0 ** (failures - 1), self.max_backoff)

    def delay(self, failures: int, retryable: bool, left: float, draw: float) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with the last error:
        the error is not worth a retry, the attempts are used up, or the wait would not
        end before the deadline (`left` seconds away)."""
        if not retryable or failures >= self.max_attempts:
            return None
        wait = self.backoff(failures, draw)
        return wait if wait < left else None
