"""`POST /api/v1/chat`."""

from __future__ import annotations

import time
import uuid

import structlog
from flask import Blueprint, Response, g, jsonify, request
from pydantic import ValidationError

from legacy_flask.services import services
from shared import contract, session
from shared.agent import agent_session_id
from shared.contract import ChatRequest
from shared.errors import BadRequest, RateLimited, SessionNotFound

bp = Blueprint("chat", __name__)
log = structlog.get_logger("legacy_flask.chat")


@bp.post("/chat")
def chat() -> Response:
    started = time.perf_counter()
    body = _read_chat_request()
    svc = services()
    shadow = _shadow_of(svc.settings.trust_shadow_header)
    store = svc.shadow_store if shadow else svc.store
    if svc.settings.rate_limit_requests and not shadow:
        decision = svc.store.hit(request.remote_addr or "unknown")
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)
    session_id = body.session_id or str(uuid.uuid4())
    turn_id = session.turn_id_for(shadow or g.request_id, session_id, body.message)
    history = None
    if shadow and body.session_id:
        # The shadow copy, seeded from the primary's record as it stood before this turn.
        current, seeded = store.seed(session_id, turn_id)
        history = current.history if seeded and current else None
    else:
        minted = request.headers.get(contract.MINTED_KEY_HEADER)
        current = store.get(session_id) if contract.may_exist(body.session_id, minted) else None
    if not session.may_continue(current, body.user_id):
        raise SessionNotFound()
    owner = current.user_id if current else body.user_id
    agent_session = agent_session_id(session_id, owner, shadow=bool(shadow))
    reply = svc.agent.invoke(agent_session, body.message, history)
    record = store.record_turn(
        session_id, body.user_id, body.message, reply.text, fresh=current is None, turn_id=turn_id
    )
    if record is None:  # created meanwhile by another user
        raise SessionNotFound()
    elapsed = (time.perf_counter() - started) * 1000
    log.info("chat.turn", session_id=session_id, turns=record.turns, processing_time_ms=elapsed)
    return jsonify(response=reply.text, session_id=session_id, processing_time_ms=elapsed)


def _shadow_of(trust_header: bool) -> str | None:
    """The primary's request id when this is a shadow request (the gateway's marker in the
    environ); its log lines then say so."""
    marker = request.environ.get(contract.SHADOW_ENVIRON_KEY)
    header = request.headers.get(contract.SHADOW_HEADER)
    shadow = contract.shadow_of(marker, header, trust_header)
    if shadow:
        structlog.contextvars.bind_contextvars(shadow=True)
    return shadow


def _read_chat_request() -> ChatRequest:
    limit = services().settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(contract.BODY_TOO_LARGE, status=413)
    if not contract.is_json_content_type(request.headers.get("Content-Type")):
        raise BadRequest(contract.UNSUPPORTED_MEDIA_TYPE, status=415)
    # MAX_CONTENT_LENGTH is one byte over the limit: a streamed (chunked) body is cut
    # there by werkzeug, so a longer read means the body was too large.
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise BadRequest(contract.BODY_TOO_LARGE, status=413)
    try:
        payload = contract.parse_json(raw)
    except (ValueError, RecursionError):
        raise BadRequest(contract.MALFORMED_JSON) from None
    if not isinstance(payload, dict):
        raise BadRequest(contract.NOT_AN_OBJECT)
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(contract.error_for(exc.errors())) from None
