"""The one place the legacy stack maps errors to HTTP responses."""

from __future__ import annotations

import structlog
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from shared import contract
from shared.errors import ServiceError

log = structlog.get_logger("legacy_flask.errors")


def _respond(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(contract.error_body(message))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _service_error(exc: ServiceError) -> Response:
    log.warning("request.failed", status=exc.status, error_code=exc.code, cause=repr(exc.__cause__))
    return _respond(exc.status, exc.message, exc.headers())


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = contract.allow_header(exc.valid_methods or ())
    return _respond(status, contract.message_for_status(status), headers)


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("request.crashed")
    return _respond(500, contract.INTERNAL_ERROR)


def register(app: Flask) -> None:
    """Every error leaves in the contract's shape; none leaks an exception's text."""
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
