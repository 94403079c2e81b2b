"""One settings class for both stacks, read from the environment under the legacy names."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_shadow_table(table: str) -> str:
    """The shadow sessions table beside `table`, where shadowed turns are kept."""
    return f"{table}_shadow"


class Settings(BaseSettings):
    """Settings shared by the Flask and FastAPI stacks.

    Field names map to the legacy environment variables case-insensitively
    (`aws_region` reads `AWS_REGION`, `dynamodb_table` reads `DYNAMODB_TABLE`, ...).
    Endpoints are not settings: boto3 reads `AWS_ENDPOINT_URL_DYNAMODB`,
    `AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME` and `AWS_ENDPOINT_URL_CLOUDWATCH` itself,
    exactly as it would against AWS.
    """

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    aws_region: str = "us-east-1"
    bedrock_agent_id: str = "LOCALAGENT"  # Bedrock ids are 10 alphanumerics
    bedrock_agent_alias_id: str = "TSTALIASID"
    dynamodb_table: str = "chat_sessions"
    # Where turns the gateway shadows (copies sent to the stack that did not serve them) read
    # and write sessions: never the primary's table. Unset: `<dynamodb_table>_shadow`.
    dynamodb_shadow_table: str | None = None
    # Whether the `X-Dualstack-Shadow` header marks a shadow request. Off: only the gateway's
    # in-process marker does (a client could send the header to a stack reached directly);
    # on for stacks behind a gateway that runs elsewhere and strips clients' copies.
    trust_shadow_header: bool = False
    log_level: str = "INFO"
    debug: bool = False
    # Where this deployment runs ("local", "staging", ...), as FastAPI's health reports it;
    # unset, "development" when `debug` is on and "production" otherwise.
    environment: str | None = None

    # Agent calls: `agent_timeout_seconds` bounds the whole call (connecting, every attempt,
    # the backoffs, reading the answer's stream to its end); within it, up to
    # `agent_max_attempts` attempts as botocore's standard retry mode would make them
    # (`shared.deadline.RetryPolicy`), each connecting within `agent_connect_timeout_seconds`.
    agent_timeout_seconds: float = Field(default=30.0, gt=0)
    agent_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    agent_max_attempts: int = Field(default=3, ge=1)
    agent_enable_trace: bool = True
    agent_retry_after_seconds: int = Field(default=5, ge=1)
    # Connections each AWS client (agent, store) keeps: the most calls one worker can have
    # in flight to that service. botocore's default, 10, would cap an async worker at ten
    # concurrent conversations.
    aws_max_pool_connections: int = Field(default=100, ge=1)

    # Session store: `store_timeout_seconds` bounds one store operation (all of its
    # DynamoDB calls, up to `store_max_attempts` attempts each).
    store_timeout_seconds: float = Field(default=5.0, gt=0)
    store_max_attempts: int = Field(default=3, ge=1)
    store_retry_after_seconds: int = Field(default=5, ge=1)
    session_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    session_history_limit: int = Field(default=20, ge=2)

    # Rate limiting: requests per client per fixed window; 0 turns it off.
    rate_limit_requests: int = Field(default=0, ge=0)
    rate_limit_window_seconds: int = Field(default=60, ge=1)

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The request's header names and values, in total; past it 431 (as the gateway does).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    cors_origins: str = "*"

    # CloudWatch custom metrics (FastAPI only): `ChatRequest` and `ProcessingTime` per chat
    # turn, `RequestCount` and `RequestDuration` per request, under this namespace; empty
    # turns them off (no middleware, no client, no background task). Kept in memory (at
    # most `metrics_buffer_size` observations; past it they are dropped and counted) and
    # sent every `metrics_flush_seconds` and once at shutdown, never while a request waits;
    # a value longer than the run leaves only the shutdown flush. boto3 reads
    # `AWS_ENDPOINT_URL_CLOUDWATCH` itself. `metrics_timeout_seconds` bounds one flush.
    metrics_namespace: str = "ChatBot/FastAPI"
    metrics_flush_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    metrics_buffer_size: int = Field(default=100_000, ge=1)
    metrics_timeout_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    @property
    def shadow_table(self) -> str:
        """The shadow sessions table (`dynamodb_shadow_table`, or the default beside the
        primary's)."""
        return self.dynamodb_shadow_table or default_shadow_table(self.dynamodb_table)
