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

import contextlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from harness.gateway import plan as plans
from harness.gateway.controller import Controller, Webhooks
from harness.gateway.plan import Plan, PlanError, PlanSpec
from harness.gateway.rollout import (
    HISTORY_LIMIT,
    Change,
    Decided,
    RolloutState,
    RolloutUnavailable,
    VersionConflict,
)
from harness.gateway.shadow import Shadow
from shared.schema_errors import one_line
from shared.session import iso

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
NO_PLAN = "No rollout plan has been started"
_CHANGE_FIELDS = ("fastapi_percent", "routes", "shadow_percent", "version")
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
    request: Request, tokens: Mapping[str, str], disabled: str = DISABLED
) -> tuple[JSONResponse | None, str]:
    """(None, the token holder's name) when the request carries an admin token, else (the
    refusal to send, "")."""
    if not tokens:
        return _error(403, disabled), ""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Bytes on both sides: compare_digest refuses non-ASCII str. Starlette decodes headers as
    # latin-1, so encoding back gives the bytes the client sent.
    offered = given.strip().encode("latin-1")
    holder = ""
    for name, token in tokens.items():  # every one compared: the time says nothing of which
        if hmac.compare_digest(offered, token.encode("utf-8")):
            holder = name
    if scheme.lower() != "bearer" or not holder:
        return _error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}), ""
    return None, holder


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
    if not set(data) - {"version"}:
        raise _BadRequest("Give fastapi_percent, shadow_percent and/or routes")
    for name in ("fastapi_percent", "shadow_percent"):
        if name in data and data[name] is None:
            # update() reads None as "unchanged"; in a body it is a mistake.
            raise _BadRequest(f"{name} must be a number from 0 to 100, not null")
    if "routes" in data and not isinstance(data["routes"], dict):
        raise _BadRequest("routes must be a JSON object mapping path prefixes to a percent or null")
    return data


def _json_object(body: bytes, empty_ok: bool = False) -> dict[str, Any]:
    if empty_ok and not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise _BadRequest("Request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest("Request body must be a JSON object")
    return data


def _based_on(request: Request, data: dict[str, Any]) -> int | None:
    """The version a change was based on: `version` in the body (taken out of it) or the
    `If-Match` header (`"7"`, as `ETag` gives it, or `7`); None when neither is given."""
    given = data.pop("version", None)
    header = request.headers.get("if-match")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 0):
        raise _BadRequest("version must be a non-negative integer")
    if header is not None:
        text = header.strip().removeprefix("W/").strip('"')
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise _BadRequest('If-Match must be a rollout version, as ETag gives it: "7"')
        if given is not None and given != int(text):
            raise _BadRequest("version and If-Match disagree")
        return int(text)
    return given


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


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
    token: str | None = None,
    tokens: Mapping[str, str] | None = None,
    metrics: Callable[[], tuple[bytes, str]],
    about: Mapping[str, Any] | None = None,
    shadow: Shadow | None = None,
    controller: Controller | None = None,
    webhooks: Webhooks | None = None,
    clock: Callable[[], float] = time.time,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The admin app over `state`; `tokens` (holder name -> token) or `token` (held by
    "admin") enable changes (none: refused); `metrics()` renders the metrics body and its
    content type; `about` (the gateway's settings that say how it routes, never a secret)
    is shown with the health; `shadow` is what `/shadow` and `/shadow/diffs` show (None:
    404); `controller` is this worker's rollout controller, shown with the plan and the
    health; `webhooks` tells a plan's webhook of the phases admins change; `routes` are
    more routes (the dashboard and its data)."""
    shown = dict(about or {})
    holders: dict[str, str] = dict(tokens or {})
    if token and not holders:
        holders["admin"] = token
    hooks = webhooks or Webhooks()

    async def rollout(request: Request) -> Response:
        # One route for both methods, so a wrong method's 405 lists them both in `Allow`.
        if request.method == "PUT":
            return await put_rollout(request)
        current = state.current
        return JSONResponse(current.to_json(), headers=_etag(current.version))

    async def put_rollout(request: Request) -> Response:
        refusal, actor = _authorize(request, holders)
        if refusal is not None:
            return refusal
        try:
            fields = _parse_change(await _read_body(request))
            version = _based_on(request, fields)
            change = await state.store.update(actor=actor, version=version, **fields)
        except _BadRequest as exc:
            return _error(exc.status, str(exc))
        except VersionConflict as exc:
            return _error(409, str(exc), _etag(exc.current))
        except ValueError as exc:
            return _error(400, str(exc))
        except RolloutUnavailable as exc:
            # An outage, not a bug: the reason is enough, a traceback would only be noise.
            log.warning("rollout.change_failed", actor=actor, error=str(exc))
            return _unavailable()
        plan = await _applied(change)
        log.info(
            "rollout.changed",
            actor=change.actor,
            at=change.at,
            old=change.old.to_json(),
            new=change.new.to_json(),
        )
        if change.event is not None:
            log.info("rollout.plan_changed", actor=change.actor, **change.event)
            hooks.notify(plan, change)
        return JSONResponse(change.to_json(), headers=_etag(change.new.version))

    async def _applied(change: Change) -> Plan | None:
        """`change` routed by at once here; the plan it changed, if any, read back."""
        plan = None
        if change.event is not None:
            with contextlib.suppress(RolloutUnavailable):
                plan = await state.store.load_plan()
        await state.apply(change, plan)
        return plan

    def plan_view(plan: Plan, lease: tuple[str, float] | None) -> dict[str, Any]:
        now = clock()
        data = plan.to_json()
        current = state.current
        checks = [dict(c) for c in reversed(plan.checks)]  # newest first
        view: dict[str, Any] = {
            **{k: data[k] for k in ("id", *PlanSpec.model_fields)},
            "phase": plan.phase,
            "reason": plan.reason,
            "step": plan.step + 1,
            "steps_total": len(plan.spec.steps),
            "step_percent": plan.percent,
            "current_percent": plans.share_of(current, plan.spec.prefix),
            "start_percent": plan.start_percent,
            "failed_checks": plan.failed_checks,
            "checks_made": plan.checks_made,
            "started_at": iso(plan.started_at),
            "updated_at": iso(plan.updated_at),
            "interval_started_at": iso(plan.window_start) if plan.running else None,
            "next_check_at": None if plan.next_check_at is None else iso(plan.next_check_at),
            "next_check_in_seconds": (
                None if plan.next_check_at is None else round(max(0.0, plan.next_check_at - now), 3)
            ),
            "last_check": checks[0] if checks else None,
            "checks": checks,
            "controller": {
                "holder": None if lease is None or lease[1] <= now else lease[0],
                "lease_expires_at": None if lease is None else iso(lease[1]),
                "this_worker": None if controller is None else controller.holder,
            },
            "version": current.version,
        }
        return view

    async def get_plan(request: Request) -> Response:
        try:
            plan = await state.store.load_plan()
            lease = await state.store.lease()
        except RolloutUnavailable as exc:
            log.warning("rollout.plan_read_failed", error=str(exc))
            return _unavailable()
        if plan is None:
            return _error(404, NO_PLAN)
        return JSONResponse(plan_view(plan, lease), headers=_etag(state.current.version))

    async def plan_root(request: Request) -> Response:
        if request.method == "PUT":
            return await put_plan(request)
        return await get_plan(request)

    async def put_plan(request: Request) -> Response:
        refusal, actor = _authorize(request, holders)
        if refusal is not None:
            return refusal
        try:
            data = _json_object(await _read_body(request))
            version = _based_on(request, data)
            spec = PlanSpec.model_validate(data)
        except _BadRequest as exc:
            return _error(exc.status, str(exc))
        except ValidationError as exc:
            return _error(400, one_line(exc, str))

        def decide(current: Any, stored: Plan | None) -> Decided:
            moved = plans.start(spec, current, clock(), stored)
            changes = plans.with_share(current, spec.prefix, moved.plan.percent)
            return Decided(changes, moved.plan, moved.event)

        return await plan_change(actor, decide, version)

    def plan_action(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            refusal, actor = _authorize(request, holders)
            if refusal is not None:
                return refusal
            try:
                data = _json_object(await _read_body(request), empty_ok=True)
                version = _based_on(request, data)
                rollback = data.pop("rollback", False) if name == "abort" else False
                if not isinstance(rollback, bool):
                    raise _BadRequest("rollback must be true or false")
                if data:
                    raise _BadRequest(f"Unknown field(s): {', '.join(sorted(data))}")
            except _BadRequest as exc:
                return _error(exc.status, str(exc))

            def decide(current: Any, stored: Plan | None) -> Decided:
                if stored is None:
                    raise LookupError(NO_PLAN)
                now = clock()
                if name == "pause":
                    moved = plans.pause(stored, now, f"paused by {actor}")
                elif name == "resume":
                    moved = plans.resume(stored, now)
                else:
                    moved = plans.abort(stored, now, rollback=rollback)
                changes = (
                    {}
                    if moved.percent is None
                    else plans.with_share(current, stored.spec.prefix, moved.percent)
                )
                return Decided(changes, moved.plan, moved.event)

            return await plan_change(actor, decide, version)

        return act

    async def plan_change(
        actor: str,
        decide: Callable[[Any, Plan | None], Decided],
        version: int | None,
        status: int = 200,
    ) -> Response:
        try:
            change = await state.store.transact(actor, decide, version=version)
        except LookupError:
            return _error(404, NO_PLAN)
        except (PlanError, VersionConflict) as exc:
            current = exc.current if isinstance(exc, VersionConflict) else state.current.version
            return _error(409, str(exc), _etag(current))
        except ValueError as exc:
            return _error(400, str(exc))
        except RolloutUnavailable as exc:
            log.warning("rollout.plan_change_failed", actor=actor, error=str(exc))
            return _unavailable()
        plan = await _applied(change)
        log.info("rollout.plan_changed", actor=change.actor, **(change.event or {}))
        hooks.notify(plan, change)
        if plan is None:
            return JSONResponse(change.to_json(), status_code=status)
        try:
            lease = await state.store.lease()
        except RolloutUnavailable:
            lease = None
        return JSONResponse(
            plan_view(plan, lease), status_code=status, headers=_etag(change.new.version)
        )

    async def get_history(request: Request) -> Response:
        refusal, _ = _authorize(request, holders, HISTORY_DISABLED)
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
        plan = state.plan
        extra = {"plan_phase": None if plan is None else plan.phase}
        if controller is not None:
            extra.update(controller.health())
        return JSONResponse({**state.health(), **extra, **shown})

    async def get_shadow(request: Request) -> Response:
        if shadow is None:
            return _error(404, NO_SHADOW)
        percent = state.current.shadow_percent
        return JSONResponse({"shadow_percent": percent, **shadow.summary()})

    async def get_shadow_diffs(request: Request) -> Response:
        if shadow is None:
            return _error(404, NO_SHADOW)
        refusal, _ = _authorize(request, holders, DIFFS_DISABLED)
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
            Route("/rollout/plan", plan_root, methods=["GET", "PUT"]),
            Route("/rollout/plan/pause", plan_action("pause"), methods=["POST"]),
            Route("/rollout/plan/resume", plan_action("resume"), methods=["POST"]),
            Route("/rollout/plan/abort", plan_action("abort"), methods=["POST"]),
            Route("/metrics", get_metrics, methods=["GET"]),
            Route("/health", get_health, methods=["GET"]),
            Route("/shadow", get_shadow, methods=["GET"]),
            Route("/shadow/diffs", get_shadow_diffs, methods=["GET"]),
            *routes,
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # "/rollout/" is not a route: answer 404, not a redirect a PUT might follow elsewhere.
    app.router.redirect_slashes = False
    return app
