"""The vocabulary of differences: the `Response` compared, the `Difference` found, its `Kind`
and `Severity`, and the path grammar every difference and rule pattern is written in.

Paths. `status`; `header:<name>` with the name in lower case; or a JSON path:

    path    := "$" segment*
    segment := "." name          a key with no . [ ] " \\ * or whitespace, not empty
             | "[" digits "]"    a list index (0, or no leading zero)
             | "[" string "]"    any other key, as a JSON string: $["a.b"], $[""], $["*"]

`$` alone is the whole body. Rule patterns (see `harness.diff.rules`) use the same grammar plus
three wildcards: `.*` one key, `[*]` one index, `.**` any number of segments, none included.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args

Kind = Literal[
    "status",
    "header_missing",
    "header_added",
    "header_value",
    "missing",
    "added",
    "type",
    "value",
    "order",
    "body",
]
Severity = Literal["breaking", "additive", "noise", "expected", "ignored"]
KINDS: tuple[Kind, ...] = get_args(Kind)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

NOISE_REASON = "differed between two legacy answers"
LONGER_LIST_REASON = "the list is longer than the legacy one"
HEADER_ORDER_REASON = "same tokens in another order"


MAX_DECODED_BYTES = 16 * 1024 * 1024
"""`decode_body` gives up (keeps the bytes as sent) on a body that would decode past this."""


@dataclass(frozen=True)
class Response:
    """One HTTP response as captured. Header names are compared case-insensitively. `body`
    is what a client reads: any `Content-Encoding` undone (`decode_body`), the header kept."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class Difference:
    """One difference between the legacy answer and the candidate's.

    `legacy` / `candidate` are the values on each side, None where a side has nothing (a
    missing header or field: `kind` tells it from a JSON null). `reason` says why the
    difference got its severity when a rule, the noise check or a decision above chose it.
    """

    path: str
    kind: Kind
    legacy: Any
    candidate: Any
    severity: Severity
    reason: str = ""


class Wildcard(Enum):
    """A wildcard segment of a path pattern."""

    KEY = ".*"
    INDEX = "[*]"
    DEPTH = ".**"


Segment = str | int | Wildcard
"""A parsed path segment: a key, a list index, or (in patterns only) a wildcard."""

Mask = Callable[[str], bool]
"""Tells whether a path's value is compared loosely (an ignored or volatile field)."""

_QUOTED_CHARS = frozenset('.[]"\\*')
_INDEX = re.compile(r"\[(0|[1-9][0-9]*)\]")
_DECODER = json.JSONDecoder()


def _needs_quotes(key: str) -> bool:
    return not key or any(
        char in _QUOTED_CHARS or char.isspace() or not char.isprintable() for char in key
    )


def key_segment(key: str) -> str:
    """The path segment for object key `key`: `.key`, or `["key"]` when it needs quoting."""
    if _needs_quotes(key):
        return "[" + json.dumps(key, ensure_ascii=False) + "]"
    return "." + key


def parse_path(text: str, *, wildcards: bool = False) -> tuple[Segment, ...]:
    """The segments of JSON path `text` (grammar in the module docstring); ValueError when it
    is not one. Wildcards are accepted only when `wildcards` is true (rule patterns)."""
    if not text.startswith("$"):
        raise ValueError("a JSON path starts with '$'")
    segments: list[Segment] = []
    at = 1
    while at < len(text):
        char = text[at]
        if char == ".":
            end = at + 1
            while end < len(text) and text[end] not in ".[":
                end += 1
            name = text[at + 1 : end]
            if name in ("*", "**"):
                if not wildcards:
                    raise ValueError(f"wildcard {name!r} at {at} outside a pattern")
                segments.append(Wildcard.KEY if name == "*" else Wildcard.DEPTH)
            elif not name:
                raise ValueError(f"empty key at {at}")
            elif _needs_quotes(name):
                raise ValueError(f'key {name!r} at {at} must be written as ["..."]')
            else:
                segments.append(name)
            at = end
        elif text.startswith("[*]", at):
            if not wildcards:
                raise ValueError(f"wildcard '[*]' at {at} outside a pattern")
            segments.append(Wildcard.INDEX)
            at += 3
        elif text.startswith('["', at):
            try:
                key, end = _DECODER.raw_decode(text, at + 1)
            except ValueError:
                raise ValueError(f"unterminated quoted key at {at}") from None
            if not text.startswith("]", end):
                raise ValueError(f"expected ']' at {end}")
            segments.append(key)
            at = end + 1
        elif match := _INDEX.match(text, at):
            segments.append(int(match.group(1)))
            at = match.end()
        else:
            raise ValueError(f"unexpected {text[at : at + 10]!r} at {at}")
    return tuple(segments)


def flatten(value: Any, prefix: str = "$") -> dict[str, Any]:
    """JSON tree `value` as leaf path -> leaf value, in document order.

    Objects recurse by key (`$.a.b`), lists by index (`$.l[0]`); scalars, `{}` and `[]` are
    leaves. Values keep their JSON types (`True` stays a bool, `1` an int)."""
    leaves: dict[str, Any] = {}
    _flatten(value, prefix, leaves)
    return leaves


def _flatten(value: Any, path: str, leaves: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, path + key_segment(str(key)), leaves)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", leaves)
    else:
        leaves[path] = value


def header_tokens(value: str) -> list[str]:
    """The comma-separated tokens of a list header's value, trimmed and in lower case."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]


_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, content_encoding: str | None, limit: int = MAX_DECODED_BYTES) -> bytes:
    """`body` with the content codings `content_encoding` names (gzip, deflate, identity)
    undone, as an HTTP client reads it. Unchanged when there is none, when one is unknown,
    when it does not decode or would decode past `limit` bytes: a client could not read it
    either, and the diff shows it as sent."""
    codings = header_tokens(content_encoding or "")
    decoded = body
    for coding in reversed(codings):  # the last coding named was applied last
        if coding == "identity":
            continue
        wbits = _DECODERS.get(coding)
        if wbits is None:
            return body
        decompressor = zlib.decompressobj(wbits)
        try:
            decoded = decompressor.decompress(decoded, limit + 1)
        except zlib.error:
            return body
        if len(decoded) > limit or not decompressor.eof or decompressor.unused_data:
            return body
    return decoded


def json_type(value: Any) -> str:
    """The JSON type of a parsed value: int and float are both "number", bool is not."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_unexpected(difference: Difference) -> bool:
    """True when `difference` breaks parity: a client written against legacy could break."""
    return difference.severity == "breaking"


def summarize(differences: Iterable[Difference]) -> dict[Severity, int]:
    """How many differences of each severity, every severity present (zero when none)."""
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for difference in differences:
        counts[difference.severity] += 1
    return counts
