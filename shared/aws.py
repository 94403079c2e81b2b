"""botocore configuration, error classification, and the retries both stacks run within one
deadline per call (`shared.deadline`), over sync (boto3) and async (aioboto3) clients."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)
from botocore.retries.standard import (
    OrRetryChecker,
    RetryContext,
    ThrottledRetryableChecker,
    TransientRetryableChecker,
)
from urllib3.util.timeout import Timeout

from shared import errors
from shared.deadline import Clock, Deadline, DeadlineExceeded, RetryPolicy, Timeouts
from shared.settings import Settings

C = TypeVar("C", bound=Config)
R = TypeVar("R")

_THROTTLING = {
    "ThrottlingException",
    "throttlingException",
    "serviceQuotaExceededException",
    "ServiceQuotaExceededException",
    "TooManyRequestsException",
}
_STORE_DOWN = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "ResourceNotFoundException",
}


def agent_config(settings: Settings, config_class: type[C] = Config) -> C:  # type: ignore[assignment]
    """botocore's own retries off: `Retrier` retries within the call's deadline. The
    timeouts here are ceilings; each attempt's are cut to the time its deadline leaves.

    `config_class` is botocore's `Config`, or aiobotocore's `AioConfig` for aioboto3.
    """
    return config_class(
        region_name=settings.aws_region,
        connect_timeout=settings.agent_connect_timeout_seconds,
        read_timeout=settings.agent_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=settings.aws_max_pool_connections,
    )


def store_config(settings: Settings, config_class: type[C] = Config) -> C:  # type: ignore[assignment]
    """Short timeouts: an unreachable store must answer 503 quickly, not hang a worker.
    botocore's own retries off, as for the agent."""
    return config_class(
        region_name=settings.aws_region,
        connect_timeout=settings.store_timeout_seconds,
        read_timeout=settings.store_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=settings.aws_max_pool_connections,
    )


def metrics_config(settings: Settings, config_class: type[C] = Config) -> C:  # type: ignore[assignment]
    """CloudWatch, for the metrics flush: short timeouts, one retry, two connections (one
    flush at a time sends its batches one after another)."""
    return config_class(
        region_name=settings.aws_region,
        connect_timeout=settings.metrics_timeout_seconds,
        read_timeout=settings.metrics_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": 2},
        max_pool_connections=2,
    )


def agent_policy(settings: Settings) -> RetryPolicy:
    """The agent call's schedule: `AGENT_TIMEOUT_SECONDS` for the whole call."""
    return RetryPolicy(
        timeout=settings.agent_timeout_seconds,
        max_attempts=settings.agent_max_attempts,
        connect_timeout=settings.agent_connect_timeout_seconds,
    )


def store_policy(settings: Settings) -> RetryPolicy:
    """One store operation's schedule: `STORE_TIMEOUT_SECONDS` for all of a plan's calls."""
    return RetryPolicy(
        timeout=settings.store_timeout_seconds,
        max_attempts=settings.store_max_attempts,
        connect_timeout=settings.store_timeout_seconds,
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (EventStreamError included), else ''."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_condition_failed(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def agent_error(exc: BaseException, settings: Settings) -> errors.ServiceError:
    """The contract error for anything that went wrong calling the agent."""
    if error_code(exc) in _THROTTLING:
        return errors.AgentThrottled(retry_after=settings.agent_retry_after_seconds)
    if isinstance(
        exc, ReadTimeoutError | ConnectTimeoutError | TimeoutError | asyncio.TimeoutError
    ):
        return errors.AgentTimeout()
    if _is_urllib3_read_timeout(exc):
        return errors.AgentTimeout()
    return errors.AgentFailed()


def is_store_down(exc: BaseException) -> bool:
    """True when a DynamoDB call failed for want of the service (unreachable, timed out,
    throttled, table missing), not because of the request: worth a retry later."""
    down = (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
        TimeoutError,
        asyncio.TimeoutError,
    )
    if isinstance(exc, down) or error_code(exc) in _STORE_DOWN:
        return True
    # aiobotocore maps aiohttp's connection and timeout errors to botocore's.
    return isinstance(exc, BotoCoreError) and not isinstance(exc, EventStreamError)


def store_error(exc: BaseException, settings: Settings) -> errors.ServiceError | None:
    """The contract error for a failed store call, or None for a bug to surface as 500."""
    if is_store_down(exc):
        return errors.StoreUnavailable(retry_after=settings.store_retry_after_seconds)
    return None


def _is_urllib3_read_timeout(exc: BaseException) -> bool:
    # botocore's sync event stream reads urllib3's raw stream directly, so a stall
    # mid-stream surfaces as urllib3's own timeout (possibly wrapped), not botocore's.
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in {"ReadTimeoutError", "TimeoutError"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- retries within a deadline ----------------------------------------------------------------

# botocore's standard mode, by its own checkers: throttling and transient error codes, HTTP
# 500/502/503/504, connection errors and timeouts. The one error our two services model as
# retryable (`ModeledRetryableChecker` needs the operation model) is named instead.
_STANDARD_MODE = OrRetryChecker([TransientRetryableChecker(), ThrottledRetryableChecker()])
_MODELED_RETRYABLE = {"ReplicatedWriteConflictException"}


@dataclass(frozen=True)
class _Status:
    """The part of an HTTP response botocore's checkers read."""

    status_code: int | None


def is_retryable(exc: BaseException) -> bool:
    """Whether botocore's standard retry mode would retry the call that raised `exc`.

    An error inside an agent's event stream is not retried (botocore never sees it): the
    agent had begun to answer. Nor is a deadline's own timeout: no time is left."""
    if isinstance(exc, EventStreamError):
        return False
    if isinstance(exc, ClientError):
        if error_code(exc) in _MODELED_RETRYABLE:
            return True
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = RetryContext(1, parsed_response=exc.response, http_response=_Status(status))
    elif isinstance(exc, Exception):
        context = RetryContext(1, caught_exception=exc)
    else:
        return False
    return bool(_STANDARD_MODE.is_retryable(context))


_LEAST_TIMEOUT = 0.001
"""urllib3 refuses a timeout of 0: a request that starts as its deadline comes gets 1 ms."""

_ATTEMPT: ContextVar[tuple[RetryPolicy, Deadline] | None] = ContextVar(
    "dualstack_aws_attempt", default=None
)


def current_timeouts() -> Timeouts | None:
    """The timeouts a request made now by this thread or task may take: its attempt's
    policy applied to the time its deadline leaves; None outside `Retrier.call`."""
    attempt = _ATTEMPT.get()
    if attempt is None:
        return None
    policy, deadline = attempt
    return policy.timeouts(max(deadline.left(), _LEAST_TIMEOUT))


@contextmanager
def _attempting(policy: RetryPolicy, deadline: Deadline) -> Iterator[None]:
    token = _ATTEMPT.set((policy, deadline))
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


class Retrier:
    """Runs boto3 calls within one deadline per operation, retrying as `RetryPolicy` says.

    Each attempt runs with `current_timeouts()` set: a client passed through
    `follow_deadlines` cuts its connect and read timeouts to them, since a blocking read
    cannot be cancelled from outside. `clock`, `sleep` and `draw` (uniform in [0, 1), for
    the backoff's jitter) are injectable for tests.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._draw = draw

    def deadline(self) -> Deadline:
        """The deadline of one whole operation starting now."""
        return Deadline.after(self.policy.timeout, self._clock)

    def call(self, deadline: Deadline, operation: Callable[[], R]) -> R:
        """`operation()`'s result, retried while the policy allows; raises the last error
        when it does not, or `DeadlineExceeded` when no time is left to make an attempt."""
        for failures in itertools.count(1):
            if self.policy.timeouts(deadline.left()) is None:
                raise DeadlineExceeded(f"no time left for attempt {failures}")
            try:
                with _attempting(self.policy, deadline):
                    return operation()
            except Exception as exc:
                wait = self.policy.delay(failures, is_retryable(exc), deadline.left(), self._draw())
                if wait is None:
                    raise
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncRetrier:
    """`Retrier` for aioboto3: the same schedule, awaited. Callers also bound the whole
    operation with `asyncio.timeout`, which cancels whatever is in flight at the deadline."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._draw = draw

    def deadline(self) -> Deadline:
        """The deadline of one whole operation starting now."""
        return Deadline.after(self.policy.timeout, self._clock)

    async def call(self, deadline: Deadline, operation: Callable[[], Awaitable[R]]) -> R:
        """`operation()`'s result, retried while the policy allows; raises the last error
        when it does not, or `DeadlineExceeded` when no time is left to make an attempt."""
        for failures in itertools.count(1):
            if self.policy.timeouts(deadline.left()) is None:
                raise DeadlineExceeded(f"no time left for attempt {failures}")
            try:
                with _attempting(self.policy, deadline):
                    return await operation()
            except Exception as exc:
                wait = self.policy.delay(failures, is_retryable(exc), deadline.left(), self._draw())
                if wait is None:
                    raise
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class _DeadlineTimeout(Timeout):
    """A connection pool's timeout whose per-request copies follow `current_timeouts()`:
    connect within its share, then connect and read together within the time left."""

    def clone(self) -> Timeout:
        timeouts = current_timeouts()
        if timeouts is None:
            return super().clone()
        return Timeout(connect=timeouts.connect, read=timeouts.read, total=timeouts.read)


def follow_deadlines(client: Any) -> Any:
    """Make a boto3 client's requests obey `current_timeouts()`; returns the client.

    botocore fixes a client's timeouts when it builds it (its per-request override is not
    in our botocore), and urllib3 copies its connection pools' timeout for each request:
    the pools get one whose copies are cut to the attempt's deadline. Call it before the
    client's first request. Raises AttributeError if botocore's HTTP session has changed
    shape, so a botocore upgrade that breaks it stops start-up rather than the deadline.
    """
    http = client._endpoint.http_session
    configured: Timeout = http._timeout
    timeout = _DeadlineTimeout(connect=configured.connect_timeout, read=configured.read_timeout)
    http._timeout = timeout  # pool managers for proxies, made on first use
    for manager in (http._manager, *http._proxy_managers.values()):
        manager.connection_pool_kw["timeout"] = timeout
        manager.clear()  # pools made before keep the old timeout
    return client


def bound_reads(stream: Any, seconds: float) -> None:
    """Let the next socket reads of a boto3 event stream wait `seconds` at most.

    urllib3 sets a response's read timeout once, as its headers arrive; a stream that
    sends an event just before each read times out would outlive its deadline. A no-op
    for anything but botocore's `EventStream` over urllib3 (test fakes, a released
    connection)."""
    raw = getattr(stream, "_raw_stream", None)  # botocore keeps urllib3's response here
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, _LEAST_TIMEOUT))
