"""The one place the migrated stack maps errors to HTTP responses, exactly as the legacy
app does (status and message); it adds `error_code` and `request_id`."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from shared import contract
from shared.errors import ServiceError

log = structlog.get_logger("fastapi_app.errors")


def _respond(
    request: Request, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, object] = {**contract.error_body(message), "error_code": code}
    body["request_id"] = getattr(request.state, "request_id", None)
    return JSONResponse(body, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    log.warning("request.failed", status=exc.status, error_code=exc.code, cause=repr(exc.__cause__))
    return _respond(request, exc.status, exc.message, exc.code, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own 422 becomes the legacy 400 with the legacy message.
    return _respond(request, 400, contract.error_for(list(exc.errors())), "invalid_request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and "Allow" in headers:
        headers["Allow"] = contract.allow_header(_methods_served(request, headers["Allow"]))
    code = {
        400: "invalid_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
    }.get(exc.status_code, "http_error")
    message = contract.message_for_status(exc.status_code)
    return _respond(request, exc.status_code, message, code, headers)


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _methods_served(request: Request, named: str) -> list[str]:
    """Every method the app serves at the request's path: Starlette's 405 names only the
    first route that matched the path (`named`), and GET and DELETE of one path are two
    routes. Read from the app's OpenAPI paths, compiled once per app."""
    state = request.app.state
    table = getattr(state, "methods_by_path", None)
    if table is None:
        table = state.methods_by_path = [
            (compile_path(path)[0], {m.upper() for m in operations if m in _HTTP_METHODS})
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
    path = request.scope["path"]
    methods = {m for regex, served in table if regex.match(path) for m in served}
    return sorted(methods) if methods else named.split(",")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("request.crashed", exc_info=exc)
    return _respond(request, 500, contract.INTERNAL_ERROR, "internal_error")


def register(app: FastAPI) -> None:
    """Every error leaves in the contract's shape; none leaks an exception's text."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
