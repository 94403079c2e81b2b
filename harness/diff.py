"""The parity diff: every difference an API client could notice between the legacy Flask
answer to a request and the FastAPI answer to the same request, each classed by severity.

Pure functions: replies in, a list of `Difference` values out. Three things are compared:

- the status code;
- the chosen headers (`DEFAULT_HEADERS` unless told), names case-insensitive. `Content-Type`
  is compared case-insensitively, ignoring whitespace around `;`. The list headers (`Allow`,
  `Vary`, `Access-Control-Allow-Methods`, `Access-Control-Allow-Headers`) are compared as sets
  of trimmed, case-insensitive tokens; the same tokens in another order is an `order`
  difference of severity "noise", since clients read these headers as sets. Other headers are
  compared as strings, surrounding whitespace trimmed;
- the body. When both bodies parse as JSON (NaN and Infinity are not JSON), their trees are
  compared; otherwise their bytes are, and any change is one `body` difference at `$`, values
  shown as text. Object key order and whitespace never count: clients cannot rely on them.

How JSON trees are compared (object keys in sorted order, so the result does not depend on
which stack sorts its keys):

- a key only in the legacy answer is `missing` (breaking), one only in the candidate `added`
  (additive), reported once at the key however deep the subtree under it;
- different JSON types are one `type` difference (breaking) at that path, subtrees included.
  The types are null, boolean, number, string, array and object: 1 and 1.0 are the same
  number, `true` is not 1;
- same type, different scalar: `value` (breaking);
- a list holding the same elements in another order: one `order` difference (breaking) at the
  list, instead of a value difference per index (given rules, the fields they ignore or mark
  volatile are left out of that judgement: a timestamp in every element cannot hide a
  reordering). Otherwise lists are compared index by index;
  an index only in the legacy list is `missing` (breaking), one only in the candidate's is
  `added` and also breaking: a list that grew is changed data, not a new field.

Paths. `status`; `header:<name>` with the name in lower case; or a JSON path:

    path    := "$" segment*
    segment := "." name          a key with no . [ ] " \\ * or whitespace, not empty
             | "[" digits "]"    a list index (0, or no leading zero)
             | "[" string "]"    any other key, as a JSON string: $["a.b"], $[""], $["*"]

`$` alone is the whole body. Rule patterns (see `harness.rules`) use the same grammar plus
three wildcards: `.*` one key, `[*]` one index, `.**` any number of segments, none included.

Rules then reclass differences (ignored, volatile, expected), and value or order differences
at paths that differed between two legacy answers to the same request (`noisy_paths`) are
classed "noise": reported, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from harness.rules import Rules, RuleUsage

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

DEFAULT_HEADERS: tuple[str, ...] = (
    "content-type",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "vary",
    "allow",
    "retry-after",
    "www-authenticate",
)
LIST_HEADERS = frozenset(
    {"allow", "vary", "access-control-allow-methods", "access-control-allow-headers"}
)
"""Headers whose value is a comma-separated set of case-insensitive tokens."""

NOISE_REASON = "differed between two legacy answers"
LONGER_LIST_REASON = "the list is longer than the legacy one"
HEADER_ORDER_REASON = "same tokens in another order"


@dataclass(frozen=True)
class Reply:
    """One HTTP response as captured. Header names are compared case-insensitively."""

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


def _normalized(value: Any) -> Any:
    # 1 and 1.0 are one number to a JSON client, so they must have one canonical form.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(key): _normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(_normalized(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _masked_canonical(value: Any, path: str, mask: Mask) -> str:
    # The element's leaves relative to the element itself, so elements from different
    # indexes compare; the masked leaves are dropped (a volatile timestamp in every element
    # must not make a reordered list look like changed values).
    leaves = flatten(value, path)
    kept = sorted(
        (leaf[len(path) :], _normalized(item)) for leaf, item in leaves.items() if not mask(leaf)
    )
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def _compare_json(
    legacy: Any, candidate: Any, path: str, out: list[Difference], mask: Mask | None = None
) -> None:
    kind = json_type(legacy)
    if kind != json_type(candidate):
        out.append(Difference(path, "type", legacy, candidate, "breaking"))
    elif kind == "object":
        for key in sorted(legacy.keys() | candidate.keys()):
            below = path + key_segment(key)
            if key not in candidate:
                out.append(Difference(below, "missing", legacy[key], None, "breaking"))
            elif key not in legacy:
                out.append(Difference(below, "added", None, candidate[key], "additive"))
            else:
                _compare_json(legacy[key], candidate[key], below, out, mask)
    elif kind == "array":
        _compare_lists(legacy, candidate, path, out, mask)
    elif legacy != candidate:
        out.append(Difference(path, "value", legacy, candidate, "breaking"))


def _compare_lists(
    legacy: list[Any], candidate: list[Any], path: str, out: list[Difference], mask: Mask | None
) -> None:
    # Order is judged on whole elements before descending, or a reordering would show up as
    # a value difference at every index it moved.
    mine = [_canonical(item) for item in legacy]
    theirs = [_canonical(item) for item in candidate]
    if mine == theirs:
        return
    if sorted(mine) == sorted(theirs):
        out.append(Difference(path, "order", legacy, candidate, "breaking"))
        return
    if mask is not None:
        # Elements that differ only in loosely compared fields: judge order without them.
        mine = [_masked_canonical(v, f"{path}[{i}]", mask) for i, v in enumerate(legacy)]
        theirs = [_masked_canonical(v, f"{path}[{i}]", mask) for i, v in enumerate(candidate)]
        if mine != theirs and sorted(mine) == sorted(theirs):
            out.append(Difference(path, "order", legacy, candidate, "breaking"))
            return
    for index in range(max(len(legacy), len(candidate))):
        below = f"{path}[{index}]"
        if index >= len(candidate):
            out.append(Difference(below, "missing", legacy[index], None, "breaking"))
        elif index >= len(legacy):
            out.append(
                Difference(below, "added", None, candidate[index], "breaking", LONGER_LIST_REASON)
            )
        else:
            _compare_json(legacy[index], candidate[index], below, out, mask)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # Invalid UTF-8 is a ValueError too; nesting deep enough to exhaust the stack is not
        # a body a client could read as JSON either.
        return False, None


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="backslashreplace")


def _compare_bodies(
    legacy: bytes, candidate: bytes, out: list[Difference], mask: Mask | None = None
) -> None:
    mine_ok, mine = _parse(legacy)
    theirs_ok, theirs = _parse(candidate)
    if mine_ok and theirs_ok:
        found: list[Difference] = []
        try:
            _compare_json(mine, theirs, "$", found, mask)
        except RecursionError:
            # Nesting the parser took but the walk cannot: no real API answers this way, and
            # the bytes still tell whether a client could see a difference.
            pass
        else:
            out.extend(found)
            return
    if legacy != candidate:
        out.append(Difference("$", "body", _text(legacy), _text(candidate), "breaking"))


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def _media_type(value: str) -> str:
    return ";".join(part.strip() for part in value.lower().split(";"))


def _header_change(name: str, legacy: str, candidate: str) -> Kind | None:
    if name in LIST_HEADERS:
        mine, theirs = _tokens(legacy), _tokens(candidate)
        if mine == theirs:
            return None
        return "order" if set(mine) == set(theirs) else "header_value"
    if name == "content-type":
        same = _media_type(legacy) == _media_type(candidate)
    else:
        same = legacy.strip() == candidate.strip()
    return None if same else "header_value"


def _compare_headers(
    legacy: Mapping[str, str],
    candidate: Mapping[str, str],
    names: Iterable[str],
    out: list[Difference],
) -> None:
    mine = {name.lower(): value for name, value in legacy.items()}
    theirs = {name.lower(): value for name, value in candidate.items()}
    for name in dict.fromkeys(name.lower() for name in names):
        path = f"header:{name}"
        old, new = mine.get(name), theirs.get(name)
        if old is None and new is None:
            continue
        if new is None:
            out.append(Difference(path, "header_missing", old, None, "breaking"))
        elif old is None:
            out.append(Difference(path, "header_added", None, new, "additive"))
        elif (kind := _header_change(name, old, new)) == "order":
            out.append(Difference(path, "order", old, new, "noise", HEADER_ORDER_REASON))
        elif kind is not None:
            out.append(Difference(path, kind, old, new, "breaking"))


def _compare(
    legacy: Reply, candidate: Reply, headers: Iterable[str], mask: Mask | None = None
) -> list[Difference]:
    out: list[Difference] = []
    if legacy.status != candidate.status:
        out.append(Difference("status", "status", legacy.status, candidate.status, "breaking"))
    _compare_headers(legacy.headers, candidate.headers, headers, out)
    _compare_bodies(legacy.body, candidate.body, out, mask)
    return out


NOISY_KINDS: frozenset[Kind] = frozenset({"value", "order", "header_value", "body"})
"""The kinds of difference noise can explain: another value (or order) at a path whose value
varies per call. A field dropped or added, a type or a status changed are never noise: two
legacy answers with different values there do not make a candidate without the field right."""


def _is_noisy(difference: Difference, noisy: tuple[str, ...]) -> bool:
    # A noisy path covers what lies below it: when the legacy answers disagree on `$.a` as a
    # whole, whatever value the candidate has inside `$.a` cannot be told from that noise.
    path = difference.path
    return difference.kind in NOISY_KINDS and any(
        path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")
        for prefix in noisy
    )


def diff(
    legacy: Reply,
    candidate: Reply,
    *,
    headers: Iterable[str] = DEFAULT_HEADERS,
    rules: Rules | None = None,
    noise: Iterable[str] = (),
    now: float | None = None,
    endpoint: str | None = None,
    usage: RuleUsage | None = None,
) -> list[Difference]:
    """Every difference between `legacy` and `candidate`: status, then `headers` in the
    order given, then the body. An empty list means a client could not tell them apart.

    `rules` reclass differences (first an ignore rule, then a volatile one, then an expected
    one, `endpoint` such as "GET /health" scoping the last), recording matches in `usage`;
    `now` (epoch seconds, the clock when None) is what volatile timestamps must be close to.
    A difference no rule decided, at or below one of the `noise` paths (from `noisy_paths`),
    is classed "noise" when it is of a kind in `NOISY_KINDS` (another value, order, header
    value or non-JSON body); a missing or added field, a type or status change keeps its
    severity. A list whose elements differ only in ignored or volatile fields and
    in their order is one `order` difference, as if those fields were equal.
    """
    noisy = tuple(noise)
    classed: list[Difference] = []
    mask = rules.masks if rules is not None else None
    for difference in _compare(legacy, candidate, headers, mask):
        verdict = None
        if rules is not None:
            verdict = rules.match(difference, endpoint, now=now, usage=usage)
        if verdict is not None:
            severity, reason = verdict
            difference = replace(difference, severity=severity, reason=reason)
        elif _is_noisy(difference, noisy):
            difference = replace(difference, severity="noise", reason=NOISE_REASON)
        classed.append(difference)
    return classed


def noisy_paths(
    first: Reply, second: Reply, *, headers: Iterable[str] = DEFAULT_HEADERS
) -> set[str]:
    """The paths at which two answers of one stack to the same request differ: what `diff`
    should class as noise for that request."""
    return {difference.path for difference in _compare(first, second, headers)}


def is_unexpected(difference: Difference) -> bool:
    """True when `difference` breaks parity: a client written against legacy could break."""
    return difference.severity == "breaking"


def summarize(differences: Iterable[Difference]) -> dict[Severity, int]:
    """How many differences of each severity, every severity present (zero when none)."""
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for difference in differences:
        counts[difference.severity] += 1
    return counts
