"""structlog JSON logging for both stacks, with the request id bound per request."""

from __future__ import annotations

import logging
import sys
import uuid

import structlog

from shared.contract import is_identifier

REQUEST_ID_HEADER = "X-Request-ID"


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr; context bound with `structlog.contextvars` is merged in."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    # sys.stderr is looked up per logger, not once at configure time: a server that
    # outlives a redirected stderr (a test's capture, a daemon's reopen) keeps logging.
    return structlog.PrintLogger(sys.stderr)


def request_id(header: str | None) -> str:
    """The client's `X-Request-ID` when well-formed, else a new one."""
    if header and is_identifier(header):
        return header
    return uuid.uuid4().hex
