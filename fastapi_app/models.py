"""Response models (the request model is the shared `ChatRequest`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ChatResponse(BaseModel):
    response: str = Field(description="The agent's answer")
    session_id: str = Field(description="The conversation's id; send it back to continue")
    processing_time_ms: float = Field(description="Time spent serving the turn")
    timestamp: float = Field(description="Epoch seconds when the answer was ready")
    tokens_used: int | None = Field(default=None, description="Model tokens, when traced")


class HealthResponse(BaseModel):
    status: Literal["healthy"]
    timestamp: float
    version: str
    environment: str


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
    error: str
    error_code: str | None = None
    request_id: str | None = None
