"""The gateway's admin API: read and change the rollout, its audit history, the metrics, the
gateway's health, and what shadow traffic found.

A Starlette app the gateway mounts at `/_gateway`. The rollout, health and metrics are open
to read, as is the shadow summary; changing the rollout, reading its history (who changed
what) and the shadow's differing exchanges (they hold users' requests and answers) need
`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`, and with no token configured both are refused
outright. A change is recorded as made by "admin", the token's holder: the client's address
is not recorded, since behind a proxy it can only come from headers a client sets. Every
answer, errors included, is JSON (`{"error": ...}` for errors), except the metrics, which
are passed through as the `metrics` callable renders them.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from harness.gateway.rollout import HISTORY_LIMIT, RolloutState, RolloutUnavailable
from harness.gateway.shadow import Shadow

__all__ = ["MAX_BODY_BYTES", "build_admin"]

MAX_BODY_BYTES = 64 * 1024
"""Largest `PUT /rollout` body read; a rollout change is a few hundred bytes."""

RETRY_AFTER_SECONDS = 5

DISABLED = "Rollout changes are disabled: set GATEWAY_ADMIN_TOKEN to enable them"
HISTORY_DISABLED = "The rollout history needs GATEWAY_ADMIN_TOKEN: none is set"
DIFFS_DISABLED = "The shadow's differing exchanges need GATEWAY_ADMIN_TOKEN: none is set"
NO_SHADOW = "This gateway does not shadow"
UNAUTHORIZED = "Invalid or missing admin token"
UNAVAILABLE = "Rollout store unavailable"
_CHANGE_FIELDS = ("fastapi_percent", "routes", "shadow_percent")
_HTTP_ERRORS = {404: "Not found", 405: "Method not allowed"}

log = structlog.get_logger("harness.gateway.admin")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unavailable() -> JSONResponse:
    return _error(503, UNAVAILABLE, {"Retry-After": str(RETRY_AFTER_SECONDS)})


class _BadRequest(Exception):
    """The request body or query is not acceptable; the message is shown to the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _authorize(
    request: Request, token: str | None, disabled: str = DISABLED
) -> JSONResponse | None:
    """None when the request carries the admin token, else the refusal to send."""
    if not token:
        return _error(403, disabled)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Bytes on both sides: compare_digest refuses non-ASCII str. Starlette decodes headers as
    # latin-1, so encoding back gives the bytes the client sent.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("latin-1"), token.encode("utf-8")
    ):
        return _error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
    return None


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    # The length test first: int() of thousands of digits raises instead of answering.
    if declared.isdigit() and (len(declared) > 12 or int(declared) > MAX_BODY_BYTES):
        raise _BadRequest("Request body too large", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BadRequest("Request body too large", 413)
    return bytes(body)


def _parse_change(body: bytes) -> dict[str, Any]:
    """The `update()` arguments a `PUT /rollout` body asks for; values are checked by the
    store, which raises ValueError with the reason."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # also invalid UTF-8, and nesting too deep
        raise _BadRequest("Request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest("Request body must be a JSON object")
    unknown = sorted(set(data) - set(_CHANGE_FIELDS))
    if unknown:
        raise _BadRequest(
            f"Unknown field(s): {', '.join(unknown)}; "
            "expected fastapi_percent, shadow_percent and/or routes"
        )
    if not data:
        raise _BadRequest("Give fastapi_percent, shadow_percent and/or routes")
    for name in ("fastapi_percent", "shadow_percent"):
        if name in data and data[name] is None:
            # update() reads None as "unchanged"; in a body it is a mistake.
            raise _BadRequest(f"{name} must be a number from 0 to 100, not null")
    if "routes" in data and not isinstance(data["routes"], dict):
        raise _BadRequest("routes must be a JSON object mapping path prefixes to a percent or null")
    return data


def _limit(request: Request, most: int, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= most):
        raise _BadRequest(f"limit must be an integer from 1 to {most}")
    return int(raw)


def build_admin(
    state: RolloutState,
    *,
    token: str | None,
    metrics: Callable[[], tuple[bytes, str]],
    about: Mapping[str, Any] | None = None,
    shadow: Shadow | None = None,
) -> Starlette:
    """The admin app over `state`; `token` enables changes (None or empty: refused);
    `metrics()` renders the metrics body and its content type; `about` (the gateway's
    settings that say how it routes, never a secret) is shown with the health; `shadow`
    is what `/shadow` and `/shadow/diffs` show (None: 404)."""
    shown = dict(about or {})

    async def rollout(request: Request) -> Response:
        # One route for both methods, so a wrong method's 405 lists them both in `Allow`.
        if request.method == "PUT":
            return await put_rollout(request)
        return JSONResponse(state.current.to_json())

    async def put_rollout(request: Request) -> Response:
        refusal = _authorize(request, token)
        if refusal is not None:
            return refusal
        actor = "admin"
        try:
            fields = _parse_change(await _read_body(request))
            change = await state.store.update(actor=actor, **fields)
        except _BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        except RolloutUnavailable as exc:
            # An outage, not a bug: the reason is enough, a traceback would only be noise.
            log.warning("rollout.change_failed", actor=actor, error=str(exc))
            return _unavailable()
        await state.apply(change)
        log.info(
            "rollout.changed",
            actor=change.actor,
            at=change.at,
            old=change.old.to_json(),
            new=change.new.to_json(),
        )
        return JSONResponse(change.to_json())

    async def get_history(request: Request) -> Response:
        refusal = _authorize(request, token, HISTORY_DISABLED)
        if refusal is not None:
            return refusal
        try:
            changes = await state.store.history(_limit(request, HISTORY_LIMIT, 100))
        except _BadRequest as exc:
            return _error(exc.status, str(exc))
        except RolloutUnavailable as exc:
            log.warning("rollout.history_failed", error=str(exc))
            return _unavailable()
        return JSONResponse({"changes": [c.to_json() for c in changes]})

    async def get_health(request: Request) -> Response:
        # 200 even when degraded: the gateway still routes (by the last rollout it read), so
        # a load balancer must not take it out; the body says what is wrong.
        return JSONResponse({**state.health(), **shown})

    async def get_shadow(request: Request) -> Response:
        if shadow is None:
            return _error(404, NO_SHADOW)
        percent = state.current.shadow_percent
        return JSONResponse({"shadow_percent": percent, **shadow.summary()})

    async def get_shadow_diffs(request: Request) -> Response:
        if shadow is None:
            return _error(404, NO_SHADOW)
        refusal = _authorize(request, token, DIFFS_DISABLED)
        if refusal is not None:
            return refusal
        kept = shadow.samples.maxlen or 1
        try:
            limit = _limit(request, kept, kept)
        except _BadRequest as exc:
            return _error(exc.status, str(exc))
        return JSONResponse({"diffs": shadow.diffs(limit)})

    async def get_metrics(request: Request) -> Response:
        body, content_type = metrics()
        return Response(body, media_type=content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = _HTTP_ERRORS.get(exc.status_code, exc.detail)
        headers = dict(exc.headers or {})
        if "Allow" in headers:
            # Starlette joins a set: sort it so the header is the same in every process.
            headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
        return _error(exc.status_code, message, headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer, so the server logs the traceback; the
        # client only ever gets the generic message.
        return _error(500, "Internal server error")

    app = Starlette(
        routes=[
            Route("/rollout", rollout, methods=["GET", "PUT"]),
            Route("/rollout/history", get_history, methods=["GET"]),
            Route("/metrics", get_metrics, methods=["GET"]),
            Route("/health", get_health, methods=["GET"]),
            Route("/shadow", get_shadow, methods=["GET"]),
            Route("/shadow/diffs", get_shadow_diffs, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # "/rollout/" is not a route: answer 404, not a redirect a PUT might follow elsewhere.
    app.router.redirect_slashes = False
    return app
