"""Response models (the request model is the shared `ChatRequest`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

FASTAPI_ONLY = "x-fastapi-only"
"""Marks, in the OpenAPI document, a field only this stack sends: the legacy one answers
without it, so the published contract (`fastapi_app.openapi`) makes it optional."""

_ONLY_HERE: JsonDict = {FASTAPI_ONLY: True}


class ChatResponse(BaseModel):
    response: str = Field(description="The agent's answer")
    session_id: str = Field(description="The conversation's id; send it back to continue")
    processing_time_ms: float = Field(description="Time spent serving the turn")
    timestamp: float = Field(
        description="Epoch seconds when the answer was ready (FastAPI only)",
        json_schema_extra=_ONLY_HERE,
    )
    tokens_used: int | None = Field(
        default=None,
        description="Model tokens, when traced (FastAPI only)",
        json_schema_extra=_ONLY_HERE,
    )


class HealthResponse(BaseModel):
    status: Literal["healthy"]
    timestamp: float
    version: str
    environment: str = Field(
        description="The deployment's environment (FastAPI only)", json_schema_extra=_ONLY_HERE
    )


class Check(BaseModel):
    ok: bool
    latency_ms: float


class DetailedHealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"]
    timestamp: float
    version: str
    environment: str
    checks: dict[str, Check]


class HistoryItem(BaseModel):
    role: Literal["user", "agent"]
    text: str
    at: str


class SessionResponse(BaseModel):
    session_id: str
    user_id: str | None
    created_at: str
    updated_at: str
    ttl: int
    turns: int
    history: list[HistoryItem]


class DeletedResponse(BaseModel):
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="The contract's message for the error")
    error_code: str | None = Field(
        default=None, description="A stable code (FastAPI only)", json_schema_extra=_ONLY_HERE
    )
    request_id: str | None = Field(
        default=None,
        description="The request's X-Request-ID (FastAPI only)",
        json_schema_extra=_ONLY_HERE,
    )
