"""Captured live traffic as a parity corpus: `python -m parity_tests --corpus FILE.jsonl`.

The gateway captures requests (`GATEWAY_CAPTURE_PATH`) as JSON lines, one request each:

    {"time": 1796000000.25, "method": "POST", "path": "/api/v1/chat",
     "headers": [["content-type", "application/json"]],
     "body": "{\"message\": \"hi\", \"session_id\": \"...\"}",   # text, or
     "body_base64": "...",                                   # bytes that are not UTF-8
     "key": "<the conversation key>", "status": 200}

`body` is the request as the gateway forwarded it (a minted `session_id` included), so every
turn of a conversation names its session. Credentials are never captured; redacted fields
hold stable pseudonyms.

Replayed, each conversation (the requests sharing a `key`, in the file's order) is one case
whose steps are its requests; a request without a key is a case of its own. Each session id a
conversation uses becomes a placeholder (`{session}`, `{session2}`, ...), so every replay runs
in fresh sessions, and a request id or gateway header is never replayed. The captured status
is kept in the case's description only: a replay judges the two stacks against each other, not
against the past.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parity_tests.cases import METHODS, Case, CorpusError, Request, Step
from shared.schema_errors import one_line

_SESSION_PATH = re.compile(r"^(/api/v1/chat/sessions/)([^/?]+)")
_NOT_REPLAYED = frozenset(
    {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-request-id",
    }
)
"""Headers a replay never sends as captured: credentials (never captured in the first place),
framing the client sets itself, and the request id (a fresh one per replay)."""


class Captured(BaseModel):
    """One captured request (a line of the file)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    time: float
    method: str
    path: str = Field(pattern=r"^/")
    headers: list[tuple[str, str]] = []
    body: str | None = None
    body_base64: str | None = None
    key: str | None = None
    status: int | None = None


def load_capture(path: str | Path) -> list[Case]:
    """The conversations in capture file `path`, as parity cases; CorpusError (one line,
    naming the file and the line) when it cannot be used."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{file}: cannot be read: {exc}") from None
    conversations: dict[str, list[Captured]] = {}
    order: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        captured = _parse(line, f"{file}:{number}")
        group = captured.key if captured.key is not None else f"\x00line {number}"
        if group not in conversations:
            conversations[group] = []
            order.append(group)
        conversations[group].append(captured)
    if not order:
        raise CorpusError(f"{file}: no captured requests")
    # A conversation's requests in the order they came (`time`): lines are written as
    # answers complete, which a fast client's next turn can overtake.
    return [
        _case(sorted(conversations[group], key=lambda c: c.time), n, file.stem)
        for n, group in enumerate(order, start=1)
    ]


def _parse(line: str, where: str) -> Captured:
    try:
        captured = Captured.model_validate_json(line)
    except ValidationError as exc:
        raise CorpusError(f"{where}: {one_line(exc, str)}") from None
    if captured.method.upper() not in METHODS:
        raise CorpusError(f"{where}: unknown method {captured.method!r}")
    if captured.body is not None and captured.body_base64 is not None:
        raise CorpusError(f"{where}: body and body_base64 are one body, not two")
    if captured.body_base64 is not None:
        try:
            base64.b64decode(captured.body_base64, validate=True)
        except binascii.Error:
            raise CorpusError(f"{where}: body_base64 is not valid base64") from None
    return captured


def _case(requests: list[Captured], number: int, file: str) -> Case:
    sessions: dict[str, str] = {}

    def placeholder(session_id: str) -> str:
        if session_id not in sessions:
            n = len(sessions) + 1
            sessions[session_id] = "{session}" if n == 1 else f"{{session{n}}}"
        return sessions[session_id]

    steps = tuple(Step(_request(captured, placeholder)) for captured in requests)
    statuses = ", ".join(str(c.status) for c in requests if c.status is not None)
    description = f"captured: {len(requests)} request(s)" + (
        f", primary statuses {statuses}" if statuses else ""
    )
    return Case(f"captured-{number}", file, steps, description)


def _request(captured: Captured, placeholder: Any) -> Request:
    # A {repeat:...} in the client's path is its own: a literal request never expands one.
    path = _SESSION_PATH.sub(lambda m: m.group(1) + placeholder(m.group(2)), captured.path)
    headers = tuple(
        (name, value)
        for name, value in captured.headers
        if name.lower() not in _NOT_REPLAYED and not name.lower().startswith("x-dualstack-")
    )
    method = captured.method.upper()
    if captured.body_base64 is not None:
        return Request(method, path, headers, captured.body_base64, "base64", literal=True)
    if captured.body is None:
        return Request(method, path, headers, literal=True)
    parsed = _json_object(captured.body)
    if parsed is not None and isinstance(parsed.get("session_id"), str):
        # Re-encoded with the session's placeholder: the stacks judge a JSON body by its
        # values, which are kept; only its spacing or escapes may differ from the capture.
        parsed = {**parsed, "session_id": placeholder(parsed["session_id"])}
        return Request(method, path, headers, parsed, "json", literal=True)
    return Request(method, path, headers, captured.body, "text", literal=True)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
