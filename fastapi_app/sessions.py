"""FastAPI-only: `GET` and `DELETE /api/v1/chat/sessions/{session_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from fastapi_app.models import DeletedResponse, ErrorResponse, SessionResponse
from fastapi_app.services import ServicesDep
from shared.contract import is_identifier
from shared.errors import SessionNotFound

router = APIRouter(tags=["sessions"])

UserHeader = Annotated[str | None, Header(alias="X-User-ID")]
_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "Missing, expired, or another user's"}
}


@router.get("/chat/sessions/{session_id}", response_model=SessionResponse, responses=_NOT_FOUND)
async def get_session(
    session_id: str, services: ServicesDep, user_id: UserHeader = None
) -> SessionResponse:
    """The session record, if it is live and belongs to the caller's `X-User-ID`."""
    if not is_identifier(session_id):
        raise SessionNotFound()
    record = await services.store.get(session_id)
    if record is None or record.user_id != user_id:
        raise SessionNotFound()
    return SessionResponse.model_validate(record.to_json())


@router.delete("/chat/sessions/{session_id}", response_model=DeletedResponse, responses=_NOT_FOUND)
async def delete_session(
    session_id: str, services: ServicesDep, user_id: UserHeader = None
) -> DeletedResponse:
    """Delete the session if it is live and belongs to the caller's `X-User-ID`."""
    if not is_identifier(session_id) or not await services.store.delete(session_id, user_id):
        raise SessionNotFound()
    return DeletedResponse(message="Session deleted successfully")
