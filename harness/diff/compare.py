"""The comparison: every difference an API client could notice between the legacy Flask
answer to a request and the FastAPI answer to the same request, each classed by severity.

Pure functions: replies in, a list of `Difference` values out. Three things are compared:

- the status code;
- the chosen headers (`DEFAULT_HEADERS` unless told), names case-insensitive (the body's
  `Content-Encoding` among them: the bodies compared are decoded, `Response.body`). `Content-Type`
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

Paths are those of `harness.diff.model`. `compare` gives the raw differences with their
default severity; `harness.diff.classify` reclasses them by the rules and the noise check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from harness.diff.model import (
    HEADER_ORDER_REASON,
    LONGER_LIST_REASON,
    Difference,
    Kind,
    Mask,
    Response,
    flatten,
    header_tokens,
    json_type,
    key_segment,
)

DEFAULT_HEADERS: tuple[str, ...] = (
    "content-type",
    "content-encoding",
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


def _media_type(value: str) -> str:
    return ";".join(part.strip() for part in value.lower().split(";"))


def _header_change(name: str, legacy: str, candidate: str) -> Kind | None:
    if name in LIST_HEADERS:
        mine, theirs = header_tokens(legacy), header_tokens(candidate)
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


def compare(
    legacy: Response, candidate: Response, headers: Iterable[str], mask: Mask | None = None
) -> list[Difference]:
    out: list[Difference] = []
    if legacy.status != candidate.status:
        out.append(Difference("status", "status", legacy.status, candidate.status, "breaking"))
    _compare_headers(legacy.headers, candidate.headers, headers, out)
    _compare_bodies(legacy.body, candidate.body, out, mask)
    return out


def noisy_paths(
    first: Response, second: Response, *, headers: Iterable[str] = DEFAULT_HEADERS
) -> set[str]:
    """The paths at which two answers of one stack to the same request differ: what `diff`
    should class as noise for that request."""
    return {difference.path for difference in compare(first, second, headers)}
