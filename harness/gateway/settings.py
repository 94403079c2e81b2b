"""The gateway's settings, read from `GATEWAY_*` environment variables.

Kept apart from `shared.settings.Settings` on purpose: the gateway is generic (any WSGI
app beside any ASGI app), while `Settings` describes the chatbot stacks.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from harness.gateway.policy import OverrideMode
from harness.gateway.shadow_rules import load_rules
from harness.gateway.upstream import parse_routes, url_problem


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


_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def parse_admin_tokens(text: str) -> dict[str, str]:
    """`name:token,name:token` (commas, semicolons or whitespace between pairs) or a JSON
    object `{"name": "token"}` as {name: token}; ValueError naming the bad entry by its
    position and name, never showing a token."""
    if text.lstrip().startswith("{"):
        try:
            given = json.loads(text)
        except ValueError:
            raise ValueError("a JSON object of names and tokens, not valid JSON") from None
        if not isinstance(given, dict) or not all(isinstance(t, str) for t in given.values()):
            raise ValueError('a JSON object must map each name to its token: {"name": "token"}')
        entries = [f"{name}:{token}" for name, token in given.items()]
    else:
        entries = [e for e in re.split(r"[,;\s]+", text) if e]
    if not entries:
        raise ValueError("no name:token pair given")
    named: dict[str, str] = {}
    for position, entry in enumerate(entries, start=1):
        name, colon, token = entry.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise ValueError(
                f"entry {position} must be name:token, the name of letters, digits, '.', '_', "
                "'-' or '@' (at most 64)"
            )
        if not token:
            raise ValueError(f"the token of {name!r} is empty")
        if any(char.isspace() or not char.isprintable() for char in token):
            raise ValueError(f"the token of {name!r} must be printable, without spaces")
        if name in named:
            raise ValueError(f"{name!r} is named twice")
        named[name] = token
    if len(set(named.values())) != len(named):
        raise ValueError("two names share one token: the history could not tell them apart")
    return named


class GatewaySettings(BaseSettings):
    """`GATEWAY_FASTAPI_PERCENT`, `GATEWAY_ADMIN_TOKEN`, ... (all optional)."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    flask_app: str = "legacy_flask:create_app()"
    """The WSGI app, by import string; a trailing `()` calls a factory (gunicorn's form)."""
    fastapi_app: str = "fastapi_app.main:app"
    """The ASGI app, by import string; a trailing `()` calls a factory."""
    flask_url: str | None = None
    """Upstream mode: the Flask stack runs elsewhere (gunicorn), reached over HTTP at this
    `http(s)://host:port[/prefix]` instead of mounting `flask_app`."""
    fastapi_url: str | None = None
    """Upstream mode: the FastAPI stack runs elsewhere (uvicorn), reached over HTTP at this
    URL instead of mounting `fastapi_app`; its routes come from its `/openapi.json`."""
    flask_routes: str | None = None
    """The Flask upstream's route templates (`/health,/api/v1/chat,/api/v1/chat/sessions/<id>`,
    or a JSON list; Flask's `<name>` or Starlette's `{name}`): the paths it serves. Unset:
    it may serve any path, so the percentage decides where FastAPI's routes do not."""
    fastapi_routes: str | None = None
    """Routes the FastAPI upstream serves beyond its OpenAPI document's (its docs pages:
    `/docs,/docs/oauth2-redirect,/redoc`)."""
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    """An upstream not reached within it: 502 (`Upstream unavailable`)."""
    upstream_read_timeout_seconds: float = Field(default=60.0, gt=0)
    """An upstream silent for longer (before its answer, or between its parts): 504
    (`Upstream timed out`). Above the stacks' own agent deadline, so theirs answers first."""
    upstream_max_in_flight: int = Field(default=64, ge=1)
    """Requests each upstream has under way at once: the admission's bound, as
    `wsgi_threads` is for a mounted Flask. One more waits, if it can start within
    `upstream_max_wait_seconds`, else it is shed (503, `Retry-After`)."""
    upstream_max_wait_seconds: float = Field(default=2.0, gt=0)
    upstream_routes_refresh_seconds: float = Field(default=60.0, gt=0)
    """How often the FastAPI upstream's `/openapi.json` is read again."""
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    """Where the rollout state table lives (boto3's variables, not a `GATEWAY_` one)."""
    fastapi_percent: float = Field(default=0.0, ge=0, le=100)
    admin_token: str | None = None
    """The admin API's token, its holder named "admin" in the rollout history."""
    admin_tokens: SecretStr | None = None
    """Named admin tokens, `name:token` pairs separated by commas (`alice:s3cret,ci:t0k`;
    semicolons or spaces work too, as does a JSON object `{"alice": "s3cret"}`),
    beside or instead of `admin_token`: the rollout history names who made each change.
    Names are letters, digits, `.`, `_`, `-` and `@`; a token holds no comma or space."""
    salt: SecretStr | None = None
    """The routing salt. Unset (or empty): the one kept in the state table, generated by the
    first gateway of a deployment that has no rollout yet (README, "The routing salt")."""
    override_token: SecretStr | None = None
    """With `override_header` "token": the `X-Dualstack-Override-Token` value that makes
    the override header count. Visible ASCII, as a header carries it unchanged."""
    override_header: OverrideMode = Field(default="off", validate_default=True)
    """Whether `X-Dualstack-Backend` can pin a request to a stack: "off" (the default: no
    client can), "open" (any client can: for trying things locally, never on the internet),
    or "token" (only with `X-Dualstack-Override-Token` equal to `override_token`)."""
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
    shadow_percent: float = Field(default=0.0, ge=0, le=100)
    """The share of conversations mirrored to the stack that did not serve them, when the
    deployment's rollout is first created (then `PUT /_gateway/rollout` changes it)."""
    shadow_max_in_flight: int = Field(default=16, ge=1)
    """Shadow requests under way at once, per worker; one more is dropped (and counted),
    never queued."""
    shadow_wsgi_threads: int = Field(default=8, ge=1)
    """WSGI threads only shadow requests use, added to `wsgi_threads`: a shadow request
    never takes a thread a primary one needs. Past them, Flask-bound shadows are dropped."""
    shadow_timeout_seconds: float = Field(default=30.0, gt=0)
    """A shadow answer not complete by then is judged an error."""
    shadow_rules: str | None = None
    """A JSON rules file the shadow answers are judged by (the diff engine's grammar);
    unset: the parity suite's rules (`harness.gateway.shadow_rules.PARITY_RULES`)."""
    shadow_diffs_kept: int = Field(default=100, ge=1, le=10_000)
    """The newest differing exchanges `GET /_gateway/shadow/diffs` keeps, per worker."""
    shadow_log: str | None = None
    """A file each differing exchange is appended to, as one JSON line."""
    controller_lease_seconds: float = Field(default=10.0, ge=1)
    """How long the rollout controller's lease lasts unless renewed (it is renewed every
    third of it). One gateway worker of the whole fleet holds it and runs the plan's checks;
    when it dies, another takes the plan over within two lease periods."""
    fleet_flush_seconds: float = Field(default=1.0, gt=0, le=3600)
    """How often each worker adds its counts (requests, errors, latency, shadow outcomes)
    to the fleet's per-second items in the state table, which the controller's checks read."""
    metrics_dir: str | None = None
    """A directory the workers of one server share (their counts, one file each), so a
    scrape of `/_gateway/metrics` covers all of them. Set it for gunicorn or another process
    manager that forks its workers; it must belong to that one server on one host. Unset:
    the workers `uvicorn --workers` starts share a private directory under the system's
    temporary directory, named after their parent process; a single process shares nothing."""
    capture_path: str | None = None
    """Capture requests for replay (`python -m parity_tests --corpus FILE.jsonl`) to this
    JSON-lines file; unset: nothing is captured."""
    capture_percent: float = Field(default=100.0, ge=0, le=100)
    """The share of conversations captured (whole), with `capture_path`."""
    capture_redact: list[str] = Field(default_factory=list)
    """JSON paths of body fields written as keyed pseudonyms (`["$.user_id"]`)."""
    capture_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    """Past it the file rotates (`FILE.1.jsonl` the newest of `capture_backups`)."""
    capture_backups: int = Field(default=3, ge=0)
    capture_queue: int = Field(default=1024, ge=1)
    """Captured requests waiting to be written; one more is dropped (and counted)."""

    @field_validator(
        "salt",
        "override_token",
        "shadow_rules",
        "shadow_log",
        "capture_path",
        "admin_token",
        "admin_tokens",
        "metrics_dir",
        "flask_url",
        "fastapi_url",
        "flask_routes",
        "fastapi_routes",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `GATEWAY_SALT=` (docker compose's `${GATEWAY_SALT:-}`) means "not set".
        return None if value == "" else value

    @field_validator("flask_url", "fastapi_url")
    @classmethod
    def _is_http_url(cls, url: str | None) -> str | None:
        problem = None if url is None else url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    @field_validator("flask_routes", "fastapi_routes")
    @classmethod
    def _routes_parse(cls, text: str | None) -> str | None:
        parse_routes(text)
        return text

    @field_validator("admin_tokens")
    @classmethod
    def _tokens_parse(cls, value: SecretStr | None) -> SecretStr | None:
        # Parsed at start-up, so a malformed list stops it with one line naming the entry
        # (never the token), not the first admin request.
        if value is not None:
            parse_admin_tokens(value.get_secret_value())
        return value

    def named_tokens(self) -> dict[str, str]:
        """Every admin token by its holder's name: `admin_tokens`, and `admin_token` as
        "admin". Empty: the admin API refuses changes."""
        tokens = self.admin_tokens
        named = {} if tokens is None else parse_admin_tokens(tokens.get_secret_value())
        if self.admin_token:
            named.setdefault("admin", self.admin_token)
        return named

    @field_validator("shadow_rules")
    @classmethod
    def _rules_load(cls, path: str | None) -> str | None:
        # Read at start-up, so a broken file stops it with one line, not the first shadow.
        load_rules(path)
        return path

    @field_validator("override_header")
    @classmethod
    def _token_fits_the_mode(cls, mode: OverrideMode, info: ValidationInfo) -> OverrideMode:
        # Checked on the mode, not the token: an error shows the value it refused, and the
        # token must never be shown.
        token: SecretStr | None = info.data.get("override_token")
        if mode == "token":
            if token is None:
                raise ValueError('"token" needs GATEWAY_OVERRIDE_TOKEN, which is not set')
            value = token.get_secret_value()
            if not all("!" <= char <= "~" for char in value):
                raise ValueError(
                    "GATEWAY_OVERRIDE_TOKEN must be visible ASCII characters, without spaces"
                )
        elif mode == "open" and token is not None:
            # Someone who set a token believes the override is guarded: it would not be.
            raise ValueError(
                '"open" lets every client pin a stack, so the GATEWAY_OVERRIDE_TOKEN set would '
                'guard nothing: use "token", or unset the token'
            )
        return mode
