"""Errors raised below the web layer; each app maps them to HTTP in one handler.

Every error carries the contract's status and public message, so the two stacks
cannot drift apart on either. Internal detail goes to the logs, never to `message`.
"""

from __future__ import annotations

from shared import contract


class ServiceError(Exception):
    """Base of every error a stack turns into a contract error response."""

    status: int = 500
    message: str = contract.INTERNAL_ERROR
    code: str = "internal_error"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        if message is not None:
            self.message = message
        self.retry_after = retry_after
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """Headers the response must carry (`Retry-After` where the contract asks for it)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class BadRequest(ServiceError):
    """The request breaks the contract (400, or the status given)."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ServiceError):
    status = 429
    message = contract.RATE_LIMITED
    code = "rate_limited"


class AgentFailed(ServiceError):
    status = 502
    message = contract.AGENT_FAILED
    code = "agent_failed"


class AgentThrottled(ServiceError):
    status = 503
    message = contract.AGENT_THROTTLED
    code = "agent_throttled"


class StoreUnavailable(ServiceError):
    status = 503
    message = contract.STORE_UNAVAILABLE
    code = "store_unavailable"


class AgentTimeout(ServiceError):
    status = 504
    message = contract.AGENT_TIMEOUT
    code = "agent_timeout"


class SessionNotFound(ServiceError):
    status = 404
    message = contract.SESSION_NOT_FOUND
    code = "session_not_found"
