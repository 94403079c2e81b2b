"""The legacy wire contract: limits, id pattern, every public error message, and the
chat request model whose validation both stacks share.

Both stacks validate a chat body with `ChatRequest` and turn the first validation
error into the contract's message with `error_for()`, so the same bad body gets the
same status and message from Flask and from FastAPI.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from email.message import Message
from http import HTTPStatus
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

MAX_MESSAGE_CHARS = 4000
MINTED_KEY_HEADER = "X-Dualstack-Minted-Key"
"""Set by the gateway on a request whose `session_id` it minted (the id, as in the body): the
conversation is new, so the stack skips reading the session before the turn. Only a hint:
the turn's write is conditional on the session's absence, so a client sending it gains
nothing (a session that exists is found by the write, and its owner rule holds)."""
SHADOW_HEADER = "X-Dualstack-Shadow"
"""On a shadow request (a copy the gateway sends to the stack that did not serve the
primary): the primary's request id. Only the gateway sets it (it strips a client's copy);
in-process the stacks read the marker from `SHADOW_SCOPE_KEY` / `SHADOW_ENVIRON_KEY`, and
trust the header only where told to (`TRUST_SHADOW_HEADER`, for stacks behind a gateway
that runs elsewhere)."""
SHADOW_SCOPE_KEY = "dualstack.shadow"
"""`scope["extensions"][SHADOW_SCOPE_KEY] = {"request_id": <the primary's request id>}`."""
SHADOW_ENVIRON_KEY = "dualstack.shadow"
"""`environ[SHADOW_ENVIRON_KEY] = <the primary's request id>` (WSGI)."""
SINGLETON_HEADERS = ("Content-Type", "Host")
"""Headers RFC 9110 allows once: a request repeating one is refused, as gunicorn (the legacy
stack's server) refuses it, since each reader would take a different one of its values."""
ID_PATTERN = re.compile(r"(?!\.+\Z)[A-Za-z0-9._:-]{1,128}")
"""Allowed `session_id`, `user_id` and `X-Request-ID` values (matched with fullmatch). Not
dots alone: `.` and `..` in `/api/v1/chat/sessions/{id}` are path segments that clients
and proxies normalise away, so such a session could never be read or deleted."""

# Public error messages. Changing one is a breaking change for API clients.
MALFORMED_JSON = "Request body must be valid JSON"
NOT_AN_OBJECT = "Request body must be a JSON object"
MESSAGE_REQUIRED = "Message is required"
MESSAGE_NOT_STRING = "Message must be a string"
MESSAGE_TOO_LONG = f"Message must be at most {MAX_MESSAGE_CHARS} characters"
MESSAGE_INVALID_TEXT = "Message must be valid Unicode text"
INVALID_SESSION_ID = "Invalid session_id"
INVALID_USER_ID = "Invalid user_id"
BODY_TOO_LARGE = "Request body too large"
UNSUPPORTED_MEDIA_TYPE = "Content-Type must be application/json"
RATE_LIMITED = "Rate limit exceeded"
AGENT_FAILED = "Agent request failed"
AGENT_THROTTLED = "Agent is busy, retry later"
AGENT_TIMEOUT = "Agent timed out"
STORE_UNAVAILABLE = "Session store unavailable"
SESSION_NOT_FOUND = "Session not found"
NOT_FOUND = "Not found"
METHOD_NOT_ALLOWED = "Method not allowed"
INTERNAL_ERROR = "Internal server error"
HEADERS_TOO_LARGE = "Request headers too large"
REQUEST_LINE_TOO_LONG = "Request line too long"
BAD_REQUEST = "Bad request"


def duplicate_header(name: str) -> str:
    """The message for a request repeating the header `name` (one of `SINGLETON_HEADERS`)."""
    return f"Duplicate {name} header"


_CONTRACT = "contract"


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError(_CONTRACT, message)


def _message(value: Any) -> str:
    if value is None:
        raise _fail(MESSAGE_REQUIRED)
    if not isinstance(value, str):
        raise _fail(MESSAGE_NOT_STRING)
    if not has_visible_text(value):
        raise _fail(MESSAGE_REQUIRED)
    if len(value) > MAX_MESSAGE_CHARS:
        raise _fail(MESSAGE_TOO_LONG)
    if not is_encodable(value):
        raise _fail(MESSAGE_INVALID_TEXT)
    return value


def _identifier(message: str) -> Any:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not is_identifier(value):
            raise _fail(message)
        return value

    return check


class ChatRequest(BaseModel):
    """Body of `POST /api/v1/chat`. Unknown fields are ignored, as the legacy app did."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            # No session id: a fixed one would be a conversation every reader of the docs
            # shares (`/docs` sends the example on "Try it out").
            "example": {"message": "Hello, what can you do?"}
        },
    )

    message: Annotated[str, BeforeValidator(_message)]
    session_id: Annotated[str | None, BeforeValidator(_identifier(INVALID_SESSION_ID))] = None
    user_id: Annotated[str | None, BeforeValidator(_identifier(INVALID_USER_ID))] = None


def shadow_of(marker: object, header: str | None, trust_header: bool) -> str | None:
    """The primary's request id when a request is a shadow copy: the gateway's in-process
    `marker` (scope extension or environ key), else, where trusted, the `SHADOW_HEADER`
    value; None for a request of its own."""
    marked = header if marker is None and trust_header else marker
    return str(marked) if marked else None


def may_exist(session_id: str | None, minted: str | None) -> bool:
    """Whether a turn's session may exist already: not when the turn names none, nor when
    it is the one the gateway minted for it (`MINTED_KEY_HEADER`, `minted`)."""
    return session_id is not None and session_id != minted


def header_bytes(headers: Iterable[tuple[str | bytes, str | bytes]]) -> int:
    """The size of a request's header names and values, in total: what the setting
    `MAX_HEADER_BYTES` limits (16 KiB, the gateway's `GATEWAY_MAX_HEADER_BYTES` default, so
    each stack answers 431 where the gateway does)."""
    return sum(len(name) + len(value) for name, value in headers)


def is_identifier(value: str) -> bool:
    """True when `value` is an allowed session, user or request id."""
    return ID_PATTERN.fullmatch(value) is not None


INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
"""Unicode categories that show nothing: controls, format characters (zero-width spaces and
joiners, bidi marks, the byte order mark), lone surrogates, and separators (white space).
Every other character is visible, private-use and not yet assigned ones included (a font may
draw them; an older Unicode table than the client's must not refuse its text)."""


def has_visible_text(text: str) -> bool:
    """Whether `text` shows anything: a character outside `INVISIBLE_CATEGORIES`."""
    return any(unicodedata.category(char) not in INVISIBLE_CATEGORIES for char in text)


@functools.cache
def invisible_ranges() -> tuple[tuple[int, int], ...]:
    """The code points in `INVISIBLE_CATEGORIES`, as inclusive ranges (for the published
    pattern; from this interpreter's Unicode table, as `has_visible_text` reads it)."""
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for point in range(sys.maxunicode + 1):
        invisible = unicodedata.category(chr(point)) in INVISIBLE_CATEGORIES
        if invisible and start is None:
            start = point
        elif not invisible and start is not None:
            ranges.append((start, point - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    return tuple(ranges)


def parse_json(raw: bytes) -> Any:
    """`raw` as JSON as RFC 8259 defines it. Python's reader also takes `NaN`, `Infinity`
    and `-Infinity`, which are not JSON: ValueError for them, as for any malformed body
    (RecursionError for nesting too deep)."""
    return json.loads(raw, parse_constant=_not_json)


def may_hold_non_json_constants(raw: bytes) -> bool:
    """A cheap test before `parse_json`: False when `raw` cannot hold `NaN` or `Infinity`."""
    return b"NaN" in raw or b"Infinity" in raw


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def is_encodable(text: str) -> bool:
    """True when `text` is valid Unicode (no lone surrogates from `\\ud800`-style escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_json_content_type(header: str | None) -> bool:
    """True for `application/json` and `application/*+json`, parameters allowed."""
    if not header:
        return False
    parsed = Message()
    parsed["content-type"] = header
    if parsed.get_content_maintype() != "application":
        return False
    subtype = parsed.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def error_for(errors: Sequence[Mapping[str, Any]]) -> str:
    """The contract message for the first of pydantic's validation errors.

    `errors` are pydantic's (or FastAPI's, whose locations start with "body") error
    dicts for a `ChatRequest`; the first one decides, in field order.
    """
    if not errors:
        return MALFORMED_JSON
    first = errors[0]
    loc = [part for part in first.get("loc", ()) if part != "body"]
    kind = first.get("type", "")
    if kind == _CONTRACT:
        return str(first["msg"])
    if kind == "json_invalid":
        return MALFORMED_JSON
    if not loc or isinstance(loc[0], int):
        # The body as a whole: absent (empty) or not an object.
        return MALFORMED_JSON if kind == "missing" else NOT_AN_OBJECT
    field = loc[0]
    return {
        "message": MESSAGE_REQUIRED if kind == "missing" else MESSAGE_NOT_STRING,
        "session_id": INVALID_SESSION_ID,
        "user_id": INVALID_USER_ID,
    }.get(str(field), MALFORMED_JSON)


def allow_header(methods: Iterable[str]) -> str:
    """The `Allow` header both stacks send: sorted, OPTIONS always, HEAD wherever GET is."""
    allowed = {m.strip().upper() for m in methods if m.strip()} | {"OPTIONS"}
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))


def message_for_status(status: int) -> str:
    """The public message for an HTTP error the framework raised itself."""
    known = {
        400: MALFORMED_JSON,
        404: NOT_FOUND,
        405: METHOD_NOT_ALLOWED,
        413: BODY_TOO_LARGE,
        415: UNSUPPORTED_MEDIA_TYPE,
        429: RATE_LIMITED,
    }
    if status in known:
        return known[status]
    if status >= 500:
        return INTERNAL_ERROR
    return HTTPStatus(status).phrase


LEGACY_CORS_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
"""What flask-cors's defaults answer to every preflight."""


def error_body(message: str) -> dict[str, str]:
    """The legacy error shape."""
    return {"error": message}
