"""The gateway's settings, read from `GATEWAY_*` environment variables.

Kept apart from `shared.settings.Settings` on purpose: the gateway is generic (any WSGI
app beside any ASGI app), while `Settings` describes the chatbot stacks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StickyRule(BaseModel):
    """Where a conversation's key is found, for requests under `prefix`.

    source "json": the top-level `field` of a JSON object body; with `mint`, a request
    without one gets a fresh id added to its body by the gateway, so the first turn of a
    conversation is routed by the same rule as the rest. source "path": the `{key}`
    segment of `pattern`. source "header": the header `field`.
    """

    prefix: str = "/"
    source: Literal["json", "path", "header"]
    field: str = ""
    pattern: str = ""
    mint: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    """With `mint`: the app's own body limit (the chatbot's `MAX_BODY_BYTES`). A body the
    minted key would push past it, or one not in UTF-8, is forwarded as it came and
    routed without a minted key, so minting never changes a request's answer."""


def default_sticky_rules() -> list[StickyRule]:
    """The chatbot's conversation key: the session id, else the user id."""
    return [
        StickyRule(
            prefix="/api/v1/chat/sessions", source="path", pattern="/api/v1/chat/sessions/{key}"
        ),
        StickyRule(prefix="/api/v1/chat", source="json", field="session_id", mint=True),
        StickyRule(prefix="/", source="header", field="X-User-ID"),
    ]


class GatewaySettings(BaseSettings):
    """`GATEWAY_FASTAPI_PERCENT`, `GATEWAY_ADMIN_TOKEN`, ... (all optional)."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    flask_app: str = "legacy_flask:create_app()"
    """The WSGI app, by import string; a trailing `()` calls a factory (gunicorn's form)."""
    fastapi_app: str = "fastapi_app.main:app"
    """The ASGI app, by import string; a trailing `()` calls a factory."""
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    """Where the rollout state table lives (boto3's variables, not a `GATEWAY_` one)."""
    fastapi_percent: float = Field(default=0.0, ge=0, le=100)
    admin_token: str | None = None
    salt: str = "dualstack"
    override_header: bool = True
    show_backend_header: bool = True
    wsgi_threads: int = Field(default=64, ge=1)
    """a2wsgi's thread pool. Flask handlers here are I/O-bound (a turn waits on Bedrock and
    DynamoDB), so a thread mostly waits: size it by Little's law, peak Flask-bound
    requests per second times their p95 time, with headroom (README, "Sizing")."""
    wsgi_max_wait_seconds: float = Field(default=2.0, gt=0)
    """The longest a Flask-bound request waits for a WSGI thread: one predicted to wait
    longer is shed at once (503, `Retry-After`), one still waiting after it is shed then."""
    shed_retry_after_seconds: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """The request's header names and values, in total; past it the gateway answers 431."""
    state_table: str = "dualstack_gateway"
    refresh_seconds: float = Field(default=1.0, gt=0)
    startup_timeout_seconds: float = Field(default=30.0, gt=0)
    """The whole start-up (the rollout store's first read, the ASGI app's lifespan): past
    it the gateway does not start, naming the part that hung."""
    sticky_rules: list[StickyRule] = Field(default_factory=default_sticky_rules)
