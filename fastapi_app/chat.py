"""`POST /api/v1/chat`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from fastapi_app.middleware import shadow_of
from fastapi_app.models import ChatResponse, ErrorResponse
from fastapi_app.services import Services, ServicesDep
from shared import contract, session
from shared.agent import agent_session_id
from shared.contract import ChatRequest
from shared.errors import BadRequest, RateLimited, SessionNotFound

log = structlog.get_logger("fastapi_app.chat")


class JSONBodyRoute(APIRoute):
    """Checks size and content type before FastAPI parses the body, in the legacy order:
    413 by Content-Length, 415, 413 while reading, then JSON and field validation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def measured(request: Request) -> Response:
            # The guide's chat metrics: each turn (but a shadow's) counted by outcome, and
            # how long a successful one took; appended to the buffer, sent later.
            services: Services = request.app.state.services
            metrics = services.metrics
            if metrics is None or shadow_of(request.scope, services.settings.trust_shadow_header):
                return await guarded(request)
            started = time.perf_counter()
            try:
                response = await guarded(request)
            except BaseException:
                metrics.record("ChatRequest", 1.0, "Count", _FAILED)
                raise
            metrics.record("ChatRequest", 1.0, "Count", _SUCCEEDED)
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            metrics.record("ProcessingTime", elapsed, "Milliseconds")
            return response

        async def guarded(request: Request) -> Response:
            services: Services = request.app.state.services
            limit = services.settings.max_body_bytes
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise BadRequest(contract.BODY_TOO_LARGE, status=413)
            if not contract.is_json_content_type(request.headers.get("content-type")):
                raise BadRequest(contract.UNSUPPORTED_MEDIA_TYPE, status=415)
            body = bytearray()
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise BadRequest(contract.BODY_TOO_LARGE, status=413)
            raw = bytes(body)
            if contract.may_hold_non_json_constants(raw):
                # FastAPI's parser (Python's) takes NaN and Infinity; the contract does not.
                try:
                    contract.parse_json(raw)
                except (ValueError, RecursionError):
                    raise BadRequest(contract.MALFORMED_JSON) from None
            request._body = raw  # FastAPI's own parsing reuses it
            return await handler(request)

        return measured


_SUCCEEDED = (("Status", "Success"),)
_FAILED = (("Status", "Error"),)


def _shadow_of(request: Request, trust_header: bool) -> str | None:
    """The primary's request id when this is a shadow request (the gateway's marker in the
    scope's extensions); its log lines then say so."""
    shadow = shadow_of(request.scope, trust_header)
    if shadow:
        structlog.contextvars.bind_contextvars(shadow=True)
    return shadow


router = APIRouter(tags=["chat"], route_class=JSONBodyRoute)

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON, not an object, or an invalid field",
        413: "Body too large",
        415: "Not JSON",
        404: "The session is another user's: a turn must name its owner's `user_id`",
        429: "Rate limited (see Retry-After)",
        502: "The agent failed",
        503: "The agent is throttled or the session store is unavailable (see Retry-After)",
        504: "The agent timed out",
    }.items()
}


@router.post("/chat", response_model=ChatResponse, responses=_ERRORS)
async def chat(body: ChatRequest, request: Request, services: ServicesDep) -> ChatResponse:
    """Send a message to the agent; continues the conversation named by `session_id`."""
    started = time.perf_counter()
    shadow = _shadow_of(request, services.settings.trust_shadow_header)
    store = services.shadow_store if shadow else services.store
    if services.settings.rate_limit_requests and not shadow:
        client = request.client.host if request.client else "unknown"
        decision = await services.store.hit(client)
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)
    session_id = body.session_id or str(uuid.uuid4())
    rid = shadow or request.state.request_id
    turn_id = session.turn_id_for(rid, session_id, body.message)
    history = None
    if shadow and body.session_id:
        # The shadow copy, seeded from the primary's record as it stood before this turn.
        current, seeded = await store.seed(session_id, turn_id)
        history = current.history if seeded and current else None
    else:
        minted = request.headers.get(contract.MINTED_KEY_HEADER)
        fresh = not contract.may_exist(body.session_id, minted)
        current = None if fresh else await store.get(session_id)
    if not session.may_continue(current, body.user_id):
        raise SessionNotFound()
    owner = current.user_id if current else body.user_id
    agent_session = agent_session_id(session_id, owner, shadow=bool(shadow))
    reply = await services.agent.invoke(agent_session, body.message, history)
    record = await store.record_turn(
        session_id, body.user_id, body.message, reply.text, fresh=current is None, turn_id=turn_id
    )
    if record is None:  # created meanwhile by another user
        raise SessionNotFound()
    elapsed = (time.perf_counter() - started) * 1000
    log.info("chat.turn", session_id=session_id, turns=record.turns, processing_time_ms=elapsed)
    return ChatResponse(
        response=reply.text,
        session_id=session_id,
        processing_time_ms=elapsed,
        timestamp=time.time(),
        tokens_used=reply.tokens_used,
    )
