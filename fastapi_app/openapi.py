"""The published contract: FastAPI's OpenAPI document, completed from `shared.contract`.

FastAPI describes what its own models check; the contract checks more (the id pattern, the
message's length and visible text, the JSON media types) in validators FastAPI cannot see,
and answers every error in one shape. `publish()` adds those limits, every error status the
contract names, and marks as optional the fields only this stack sends, so the one document
holds for whichever stack answers: a client cannot know which one will.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from fastapi_app.models import FASTAPI_ONLY
from shared import contract

Document = dict[str, Any]

ID_LENGTH = tuple(int(n) for n in re.findall(r"\{(\d+),(\d+)\}", contract.ID_PATTERN.pattern)[0])
"""The id's length bounds, (1, 128), read from the contract's pattern."""

ID_SCHEMA_PATTERN = "^" + contract.ID_PATTERN.pattern.replace(r"\Z", "$") + "$"
"""`contract.ID_PATTERN` as JSON Schema writes it (ECMA-262, searched, not fullmatched):
anchored, `$` for Python's `\\Z` (in ECMA-262 `$` without the `m` flag is the end of the
input; Python's own `$` would also match before a final newline)."""


def _class_member(point: int) -> str:
    # BMP code points as \\uXXXX (ECMA-262 and Python alike); astral ones as themselves.
    return f"\\u{point:04x}" if point <= 0xFFFF else chr(point)


def visible_text_pattern() -> str:
    """At least one visible character, as `contract.has_visible_text` judges: one outside
    the invisible categories, their code points listed (`contract.invisible_ranges`).
    Explicit ranges, not `\\p{...}` classes, which generators such as schemathesis can only
    approximate (so they would draw text the stacks refuse as valid, or the reverse)."""
    members = "".join(
        _class_member(a) if a == b else f"{_class_member(a)}-{_class_member(b)}"
        for a, b in contract.invisible_ranges()
        if not 0xD800 <= a <= 0xDFFF  # lone surrogates: not text a regex engine can hold
    )
    return f"[^{members}]"


JSON_MEDIA_TYPES = ("application/json", "application/*+json")
"""What `contract.is_json_content_type` accepts (parameters allowed)."""

_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_REQUEST_ID = {
    "description": "The request's id: the client's `X-Request-ID` when well-formed, else minted",
    "required": True,
    "schema": {"type": "string", "pattern": ID_SCHEMA_PATTERN},
}

# Every error the contract names, per operation: (status, its messages). Statuses whose
# answer carries `Retry-After` are in _RETRYING.
_CHAT_ERRORS: dict[str, tuple[str, ...]] = {
    "400": (
        contract.MALFORMED_JSON,
        contract.NOT_AN_OBJECT,
        contract.MESSAGE_REQUIRED,
        contract.MESSAGE_NOT_STRING,
        contract.MESSAGE_TOO_LONG,
        contract.MESSAGE_INVALID_TEXT,
        contract.INVALID_SESSION_ID,
        contract.INVALID_USER_ID,
    ),
    "404": (contract.SESSION_NOT_FOUND,),
    "413": (contract.BODY_TOO_LARGE,),
    "415": (contract.UNSUPPORTED_MEDIA_TYPE,),
    "429": (contract.RATE_LIMITED,),
    "500": (contract.INTERNAL_ERROR,),
    "502": (contract.AGENT_FAILED,),
    "503": (contract.AGENT_THROTTLED, contract.STORE_UNAVAILABLE),
    "504": (contract.AGENT_TIMEOUT,),
}
_SESSION_ERRORS: dict[str, tuple[str, ...]] = {
    "404": (contract.SESSION_NOT_FOUND,),
    "500": (contract.INTERNAL_ERROR,),
    "503": (contract.STORE_UNAVAILABLE,),
}
_OTHER_ERRORS: dict[str, tuple[str, ...]] = {"500": (contract.INTERNAL_ERROR,)}
_RETRYING = frozenset({"429", "503"})


def install(app: FastAPI) -> None:
    """Serve the published document at `/openapi.json` (and in `/docs`)."""
    build: Callable[[], Document] = app.openapi

    def openapi() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = publish(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def publish(document: Document) -> Document:
    """`document` (FastAPI's) completed with the contract; the argument is not changed."""
    published = copy.deepcopy(document)
    schemas = published.setdefault("components", {}).setdefault("schemas", {})
    _describe_chat_request(schemas["ChatRequest"])
    for schema in schemas.values():
        _optional_fastapi_only(schema)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, never sent
        schemas.pop(name, None)
    for path, item in published.get("paths", {}).items():
        for method, operation in item.items():
            _complete_operation(path, method, operation)
    return published


def _id_schema(description: str) -> Document:
    low, high = ID_LENGTH
    return {
        "type": "string",
        "minLength": low,
        "maxLength": high,
        "pattern": ID_SCHEMA_PATTERN,
        "description": description,
    }


def _describe_chat_request(schema: Document) -> None:
    properties = schema["properties"]
    properties["message"].update(
        minLength=1,
        maxLength=contract.MAX_MESSAGE_CHARS,
        pattern=visible_text_pattern(),
        description=(
            f"The user's message: at most {contract.MAX_MESSAGE_CHARS} characters, "
            "at least one of them visible"
        ),
    )
    for field, what in (
        ("session_id", "The conversation to continue; a new one when absent"),
        ("user_id", "Who speaks; a conversation started with one is continued only by it"),
    ):
        properties[field]["anyOf"] = [_id_schema(what), {"type": "null"}]


def _optional_fastapi_only(schema: Document) -> None:
    """Fields marked FastAPI-only in the models are documented, typed, and not required:
    the legacy stack does not send them."""
    only = [name for name, prop in schema.get("properties", {}).items() if prop.get(FASTAPI_ONLY)]
    if not only:
        return
    required = [name for name in schema.get("required", []) if name not in only]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


def _complete_operation(path: str, method: str, operation: Document) -> None:
    responses: Document = operation.setdefault("responses", {})
    responses.pop("422", None)
    if path.endswith("/chat") and method == "post":
        errors = _CHAT_ERRORS
        body = operation["requestBody"]["content"]
        schema = body["application/json"]["schema"]
        body.clear()
        body.update({media: {"schema": schema} for media in JSON_MEDIA_TYPES})
    elif "{session_id}" in path:
        errors = _SESSION_ERRORS
    else:
        errors = _OTHER_ERRORS
    for status, messages in errors.items():
        response = responses.setdefault(status, {"description": ""})
        listed = "; ".join(f"`{message}`" for message in messages)
        response["description"] = " ".join(
            part for part in (response.get("description", ""), f"({listed})") if part
        )
        response["content"] = {"application/json": {"schema": _ERROR}}
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = _REQUEST_ID
        if status in _RETRYING:
            headers["Retry-After"] = _RETRY_AFTER
