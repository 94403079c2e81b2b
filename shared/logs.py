"""structlog JSON logging for both stacks, with the request id bound per request."""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import threading

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


class StderrLogger:
    """Writes each rendered line to the current `sys.stderr`.

    The stream is looked up per line, not once at configure time, so a server that
    outlives a redirected stderr keeps logging; and a failed write (closed stream,
    broken pipe) is dropped, never raised: a log line must not fail the request it
    describes, least of all after that request's data was written.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger(*args: object) -> StderrLogger:
    return StderrLogger()


def request_id(header: str | None) -> str:
    """The client's `X-Request-ID` when well-formed, else a new one."""
    if header and is_identifier(header):
        return header
    # 128 random bits without a system call per request (os.urandom costs one). Ids need
    # to be unique, not secret; `random` reseeds itself in every forked worker.
    return f"{random.getrandbits(128):032x}"
