"""botocore configuration, error classification, and the retries run within a deadline:
`Retrier` and `AsyncRetrier` over fake operations on a fake clock, then a real boto3
client against a port that never answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)

from shared import aws, errors
from shared.deadline import Deadline, DeadlineExceeded, RetryPolicy, Timeouts
from shared.settings import Settings


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "secret detail"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "InvokeAgent",
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("ThrottlingException", 429), errors.AgentThrottled),
        (
            EventStreamError(
                {"Error": {"Code": "throttlingException", "Message": "x"}}, "InvokeAgent"
            ),
            errors.AgentThrottled,
        ),
        (ReadTimeoutError(endpoint_url="http://x"), errors.AgentTimeout),
        (TimeoutError(), errors.AgentTimeout),
        (DeadlineExceeded(), errors.AgentTimeout),
        (_client_error("AccessDeniedException", 403), errors.AgentFailed),
        (
            EventStreamError(
                {"Error": {"Code": "internalServerException", "Message": "x"}}, "InvokeAgent"
            ),
            errors.AgentFailed,
        ),
        (EndpointConnectionError(endpoint_url="http://x"), errors.AgentFailed),
        (ValueError("boom"), errors.AgentFailed),
    ],
)
def test_agent_error_classification(exc: Exception, expected: type[errors.ServiceError]) -> None:
    mapped = aws.agent_error(exc, Settings(agent_retry_after_seconds=7))
    assert type(mapped) is expected
    assert "secret" not in mapped.message
    assert mapped.headers() == ({"Retry-After": "7"} if expected is errors.AgentThrottled else {})


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (DeadlineExceeded(), True),
        (_client_error("ProvisionedThroughputExceededException"), True),
        (_client_error("ResourceNotFoundException"), True),
        (_client_error("ValidationException"), False),
        (KeyError("bug"), False),
    ],
)
def test_store_error_classification(exc: Exception, unavailable: bool) -> None:
    mapped = aws.store_error(exc, Settings(store_retry_after_seconds=3))
    assert (mapped is not None) is unavailable
    if mapped is not None:
        assert (mapped.status, mapped.headers()) == (503, {"Retry-After": "3"})


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (_client_error("ThrottlingException", 429), True),
        (_client_error("ThrottlingException", 400), True),
        (_client_error("ProvisionedThroughputExceededException"), True),
        (_client_error("RequestLimitExceeded"), True),
        (_client_error("ReplicatedWriteConflictException", 409), True),  # modeled retryable
        (_client_error("InternalServerException", 500), True),
        (_client_error("BadGatewayException", 502), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("RequestTimeout", 408), True),
        (_client_error("AccessDeniedException", 403), False),
        (_client_error("ValidationException", 400), False),
        (_client_error("ConditionalCheckFailedException", 400), False),
        (_client_error("ServiceQuotaExceededException", 400), False),  # 503 busy, not retried
        (
            EventStreamError(
                {"Error": {"Code": "throttlingException", "Message": "x"}}, "InvokeAgent"
            ),
            False,  # mid-stream: the agent had begun to answer
        ),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectTimeoutError(endpoint_url="http://x"), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionClosedError(endpoint_url="http://x"), True),
        (DeadlineExceeded(), False),
        (TimeoutError(), False),
        (ValueError("bug"), False),
    ],
)
def test_retried_is_what_botocores_standard_mode_retries(exc: Exception, retryable: bool) -> None:
    assert aws.is_retryable(exc) is retryable


def test_botocores_own_retries_are_off_and_both_clients_keep_their_connections() -> None:
    settings = Settings(aws_max_pool_connections=37)
    for config in (aws.agent_config(settings), aws.store_config(settings)):
        assert config.retries == {"mode": "standard", "total_max_attempts": 1}
        assert config.max_pool_connections == 37
    assert Settings().aws_max_pool_connections > 10  # above botocore's default


def test_each_deadline_is_the_setting_of_its_service() -> None:
    settings = Settings(
        agent_timeout_seconds=9,
        agent_max_attempts=4,
        agent_connect_timeout_seconds=2,
        store_timeout_seconds=1.5,
        store_max_attempts=2,
    )
    assert aws.agent_policy(settings) == RetryPolicy(9, 4, 2)
    assert aws.store_policy(settings) == RetryPolicy(1.5, 2, 1.5)


# -- the retry loop, over a fake clock ---------------------------------------------------------

POLICY = RetryPolicy(timeout=3.0, max_attempts=3, connect_timeout=1.0)
THROTTLED = _client_error("ThrottlingException", 429)
FAILED = _client_error("InternalServerException", 500)
DENIED = _client_error("AccessDeniedException", 403)
HUNG = ReadTimeoutError(endpoint_url="http://agent")


@dataclass
class Script:
    """Attempts that take `seconds` of a fake clock, then answer or raise; it records the
    timeouts each attempt was given and the waits between them."""

    steps: list[tuple[float, object]]
    now: float = 0.0
    seen: list[Timeouts | None] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def attempt(self) -> object:
        self.seen.append(aws.current_timeouts())
        seconds, outcome = self.steps[len(self.seen) - 1]
        self.now += seconds
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _run_sync(script: Script, deadline: Deadline | None) -> object:
    retrier = aws.Retrier(POLICY, clock=script.clock, sleep=script.sleep, draw=lambda: 0.5)
    return retrier.call(deadline or retrier.deadline(), script.attempt)


def _run_async(script: Script, deadline: Deadline | None) -> object:
    async def sleep(seconds: float) -> None:
        script.sleep(seconds)

    async def attempt() -> object:
        return script.attempt()

    retrier = aws.AsyncRetrier(POLICY, clock=script.clock, sleep=sleep, draw=lambda: 0.5)
    return asyncio.run(retrier.call(deadline or retrier.deadline(), attempt))


TWINS = {"sync": _run_sync, "async": _run_async}


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    ("steps", "outcome", "seen", "waits"),
    [
        pytest.param(
            [(0.25, THROTTLED), (0.5, "answer")],
            "answer",
            [Timeouts(1.0, 3.0), Timeouts(1.0, 2.25)],
            [0.5],
            id="throttled-then-answered",
        ),
        pytest.param(
            [(0.25, FAILED)] * 3,
            FAILED,
            [Timeouts(1.0, 3.0), Timeouts(1.0, 2.25), Timeouts(1.0, 1.0)],
            [0.5, 1.0],
            id="attempts-used-up",
        ),
        pytest.param(
            [(3.0, HUNG)], HUNG, [Timeouts(1.0, 3.0)], [], id="hung-for-the-whole-deadline"
        ),
        pytest.param([(0.25, DENIED)], DENIED, [Timeouts(1.0, 3.0)], [], id="not-retryable"),
        pytest.param(
            [(2.75, THROTTLED)],
            THROTTLED,
            [Timeouts(1.0, 3.0)],
            [],
            id="backoff-longer-than-the-time-left",
        ),
    ],
)
def test_retries_follow_the_schedule_within_the_deadline(
    twin: str,
    steps: list[tuple[float, object]],
    outcome: object,
    seen: list[Timeouts],
    waits: list[float],
) -> None:
    script = Script(steps)
    try:
        result: object = TWINS[twin](script, None)
    except Exception as exc:
        result = exc
    assert (result, script.seen, script.waits) == (outcome, seen, waits)
    assert aws.current_timeouts() is None  # only while an attempt runs


@pytest.mark.parametrize("twin", TWINS)
def test_no_attempt_starts_once_the_deadline_has_come(twin: str) -> None:
    script = Script([(0.0, "answer")], now=5.0)
    with pytest.raises(DeadlineExceeded):
        TWINS[twin](script, Deadline(5.0, script.clock))
    assert script.seen == []


# -- a real boto3 client against a port that never answers -------------------------------------


def _silent_dynamodb(url: str, timeout: float) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=aws.store_config(Settings(store_timeout_seconds=timeout)),
    )


@pytest.mark.parametrize(
    ("configured", "deadline", "gives_up_after"),
    [(30.0, 0.5, 0.5), (0.5, None, 0.5)],
    ids=["within-an-attempt-the-deadline", "outside-one-the-configured-timeout"],
)
def test_a_client_following_deadlines_reads_for_the_time_left(
    configured: float, deadline: float | None, gives_up_after: float
) -> None:
    # The kernel accepts the connection; nobody ever answers it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = aws.follow_deadlines(_silent_dynamodb(f"http://127.0.0.1:{port}", configured))
        get: Callable[[], Any] = lambda: client.describe_table(TableName="sessions")  # noqa: E731
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            if deadline is None:
                get()
            else:
                retrier = aws.Retrier(RetryPolicy(deadline, 3, deadline))
                retrier.call(retrier.deadline(), get)
        elapsed = time.monotonic() - started
        client.close()
    assert gives_up_after <= elapsed < gives_up_after + 1.0
