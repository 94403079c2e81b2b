"""botocore configuration and error classification shared by the sync and async clients."""

from __future__ import annotations

import asyncio
from typing import TypeVar

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

from shared import errors
from shared.settings import Settings

C = TypeVar("C", bound=Config)

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
    """Retries set explicitly: botocore versions differ in their default mode.

    `config_class` is botocore's `Config`, or aiobotocore's `AioConfig` for aioboto3.
    """
    return config_class(
        region_name=settings.aws_region,
        connect_timeout=settings.agent_connect_timeout_seconds,
        read_timeout=settings.agent_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": settings.agent_max_attempts},
        max_pool_connections=settings.aws_max_pool_connections,
    )


def store_config(settings: Settings, config_class: type[C] = Config) -> C:  # type: ignore[assignment]
    """Short timeouts: an unreachable store must answer 503 quickly, not hang a worker."""
    return config_class(
        region_name=settings.aws_region,
        connect_timeout=settings.store_timeout_seconds,
        read_timeout=settings.store_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": settings.store_max_attempts},
        max_pool_connections=settings.aws_max_pool_connections,
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
