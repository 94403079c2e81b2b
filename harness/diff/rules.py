"""Parity rules: differences to ignore, volatile fields and the checks their values must still
pass, and expected differences with their reason. Parsed from data (the parity suite reads
it from YAML):

    ignore:                      # path patterns whose differences are classed "ignored"
      - header:x-request-id
    volatile:                    # fields that differ on every call but must keep their format
      - path: $.processing_time_ms
        check: duration_ms       # timestamp, uuid, id, duration_ms, number, string, iso8601
      - path: $.timestamp
        check: timestamp
        max_age_seconds: 60      # timestamps only: how far from now (default 300)
    expected:                    # known differences, each with the reason it is accepted
      - path: $.environment
        reason: FastAPI reports its environment on /health
        kind: added              # optional: only differences of this kind
        endpoint: GET /health    # optional: only on this endpoint; {name} or * for a segment
      - path: header:vary
        tokens: [accept-encoding]  # optional, headers only: the candidate's value is the
        reason: FastAPI gzips      # legacy one's tokens plus some of these, nothing else

A pattern is `status`, `header:<name>` (or `header:*`), or a JSON path pattern as described in
`harness.diff.model` (`.*` one key, `[*]` one index, `.**` any depth). Rules are tried in that
order, ignore then volatile then expected, first match within each section wins. A rule that never
matched in a run is stale: `RuleUsage.stale` names it, and it is reported, not an error.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from harness.diff.model import (
    Difference,
    Kind,
    Segment,
    Severity,
    Wildcard,
    header_tokens,
    parse_path,
)
from shared.contract import is_identifier
from shared.schema_errors import UNKNOWN_FIELD, explain_error, first_error, show

Check = Literal["timestamp", "uuid", "id", "duration_ms", "number", "string", "iso8601"]
CHECKS: tuple[Check, ...] = get_args(Check)
DEFAULT_MAX_AGE_SECONDS = 300.0

VOLATILE_REASON = "volatile"
FAILED_CHECK = "volatile field failed its check: "

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_ENDPOINT = re.compile(r"([A-Za-z]+) +(/\S*)")


class RulesError(ValueError):
    """A rules file or structure that cannot be used; the message is one line naming the
    source and the bad entry."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- patterns ---------------------------------------------------------------------------------


def _glob(pattern: tuple[Segment, ...], path: tuple[Segment, ...]) -> bool:
    # A set of positions in the pattern, advanced one path segment at a time: `.**` can
    # stay put or move on, so several of them never cost more than len(pattern) per step.
    def closure(positions: set[int]) -> set[int]:
        reached = set(positions)
        for position in positions:
            while position < len(pattern) and pattern[position] is Wildcard.DEPTH:
                position += 1
                reached.add(position)
        return reached

    positions = closure({0})
    for segment in path:
        following: set[int] = set()
        for position in positions:
            if position == len(pattern):
                continue
            wanted = pattern[position]
            if wanted is Wildcard.DEPTH:
                following.add(position)
            elif (
                (wanted is Wildcard.KEY and isinstance(segment, str))
                or (wanted is Wildcard.INDEX and isinstance(segment, int))
                or wanted == segment  # "0" the key is not 0 the index: str != int
            ):
                following.add(position + 1)
        positions = closure(following)
    return len(pattern) in positions


@functools.lru_cache(maxsize=4096)
def _segments(path: str) -> tuple[Segment, ...] | None:
    try:
        return parse_path(path)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a difference's path matches `pattern`; ValueError when
    `pattern` is not one (see the module docstring)."""
    if pattern == "status":
        return lambda path: path == "status"
    if pattern.startswith("header:"):
        name = pattern.removeprefix("header:").lower()
        if name == "*":
            return lambda path: path.startswith("header:")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        return lambda path: path == "header:" + name
    if not pattern.startswith("$"):
        raise ValueError("a pattern is 'status', 'header:<name>' or a JSON path starting with $")
    wanted = parse_path(pattern, wildcards=True)

    def matcher(path: str) -> bool:
        segments = _segments(path)
        return segments is not None and _glob(wanted, segments)

    return matcher


def matches(pattern: str, path: str) -> bool:
    """True when difference path `path` matches rule pattern `pattern`."""
    return compile_pattern(pattern)(path)


def _endpoint(text: str) -> tuple[str, tuple[str, ...]] | None:
    found = _ENDPOINT.fullmatch(text.strip())
    if found is None:
        return None
    path = found.group(2).partition("?")[0]
    return found.group(1).upper(), tuple(path.split("/"))


def _endpoint_matches(rule: str, endpoint: str | None) -> bool:
    wanted, actual = _endpoint(rule), _endpoint(endpoint) if endpoint is not None else None
    if wanted is None or actual is None or wanted[0] != actual[0]:
        return False
    if len(wanted[1]) != len(actual[1]):
        return False
    return all(
        mine == theirs or mine == "*" or (mine.startswith("{") and mine.endswith("}"))
        for mine, theirs in zip(wanted[1], actual[1], strict=True)
    )


# --- volatile checks --------------------------------------------------------------------------


def check_volatile(
    check: Check, value: Any, now: float, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
) -> str | None:
    """None when `value` passes `check`, else a one-line reason why not.

    timestamp: a number of epoch seconds (not a bool) within `max_age_seconds` of `now`, either
    way; uuid: a canonical (lower-case, hyphenated) UUID string; id: a string matching
    `^[A-Za-z0-9._:-]{1,128}$`; duration_ms: a non-negative number; iso8601: a string
    `datetime.fromisoformat` reads; number / string: a value of that JSON type.
    """
    if check == "timestamp":
        if not _is_number(value):
            return f"timestamp must be a number of epoch seconds, got {show(value)}"
        if abs(now - value) > max_age_seconds:
            return f"timestamp {value!r} is more than {max_age_seconds:g} s away from now"
        return None
    if check == "duration_ms":
        if not _is_number(value) or value < 0:
            return f"duration_ms must be a non-negative number, got {show(value)}"
        return None
    if check == "number":
        return None if _is_number(value) else f"expected a number, got {show(value)}"
    if not isinstance(value, str):
        return f"{check} must be a string, got {show(value)}"
    if check == "uuid":
        return None if _UUID.fullmatch(value) else f"not a canonical UUID: {show(value)}"
    if check == "id":
        return None if is_identifier(value) else f"not a valid id: {show(value)}"
    if check == "iso8601":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return f"not an ISO 8601 date-time: {show(value)}"
        return None
    if check == "string":
        return None
    raise ValueError(f"unknown check {check!r}")


# --- rules ------------------------------------------------------------------------------------


def _pattern(pattern: str) -> str:
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        raise ValueError(f"bad pattern {pattern!r}: {exc}") from None
    return pattern


def _reason(text: str) -> str:
    if not text.strip():
        raise ValueError(f"must be a non-empty string, not {show(text)}")
    return text


def _endpoint_rule(text: str) -> str:
    if _endpoint(text) is None:
        raise ValueError(f"must look like 'GET /health', not {show(text)}")
    return text


def _token(text: str) -> str:
    if not text.strip() or "," in text:
        raise ValueError(f"must be one header token, not {show(text)}")
    return text.strip().lower()


def _none_is_empty(value: object) -> object:
    # An empty section (`ignore:` with nothing under it) is no rules, not an error.
    return () if value is None else value


# Strict scalars: a rules file saying `max_age_seconds: "60"` or `true` has a typo, not a value.
_Pattern = Annotated[str, Strict(), AfterValidator(_pattern)]
_Reason = Annotated[str, Strict(), AfterValidator(_reason)]
_Endpoint = Annotated[str, Strict(), AfterValidator(_endpoint_rule)]
_Token = Annotated[str, Strict(), AfterValidator(_token)]
_MaxAge = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
_SCHEMA = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_SCHEMA)
class Volatile:
    """A field whose value differs on every call, but must still pass `check`."""

    path: _Pattern
    check: Check
    max_age_seconds: _MaxAge = DEFAULT_MAX_AGE_SECONDS


@dataclass(frozen=True, config=_SCHEMA)
class Expected:
    """A known difference, accepted for `reason`; limited to one `kind` and one `endpoint`
    ("GET /health", `{name}` or `*` standing for one path segment) when they are given."""

    path: _Pattern
    reason: _Reason
    kind: Kind | None = None
    endpoint: _Endpoint | None = None
    tokens: tuple[_Token, ...] = ()
    """Header rules only: the difference is accepted only when the candidate's value holds
    every token of the legacy one's (none when it has no such header) plus one or more of
    these, and nothing else (`Vary: Origin` against `Vary: Origin, Accept-Encoding`)."""

    def __post_init__(self) -> None:
        if self.tokens and not self.path.startswith("header:"):
            raise ValueError(f"tokens apply to header paths only, not {self.path!r}")

    def adds_only_tokens(self, difference: Difference) -> bool:
        """Whether `difference` is the candidate adding some of `tokens` to the header."""
        if difference.kind not in ("header_added", "header_value"):
            return False
        legacy = set(header_tokens(difference.legacy or ""))
        candidate = set(header_tokens(difference.candidate or ""))
        added = candidate - legacy
        return legacy <= candidate and bool(added) and added <= set(self.tokens)


Rule = str | Volatile | Expected
"""One rule: an ignored path pattern, a volatile field or an expected difference."""


def describe(rule: Rule) -> str:
    """A one-line name for `rule`, as stale-rule reports show it."""
    if isinstance(rule, str):
        return f"ignore {rule}"
    if isinstance(rule, Volatile):
        return f"volatile {rule.path} ({rule.check})"
    scope = "".join(
        [
            f" {rule.kind}" if rule.kind else "",
            f" adding {', '.join(rule.tokens)}" if rule.tokens else "",
            f" on {rule.endpoint}" if rule.endpoint else "",
        ]
    )
    return f"expected {rule.path}{scope}: {rule.reason}"


def _judge(rule: Volatile, difference: Difference, now: float) -> tuple[Severity, str]:
    if difference.kind in ("missing", "header_missing"):
        return "breaking", FAILED_CHECK + "absent from the candidate"
    failed = check_volatile(rule.check, difference.candidate, now, rule.max_age_seconds)
    if failed is not None:
        return "breaking", FAILED_CHECK + failed
    if difference.kind in ("added", "header_added"):
        # Nothing on the legacy side to be volatile against: the field is new, and checked.
        return difference.severity, f"{VOLATILE_REASON}, new in the candidate"
    # The candidate is what is on trial; a legacy value out of shape is said, not held
    # against it (a recorded legacy answer's timestamp, for one, is old by design).
    failed = check_volatile(rule.check, difference.legacy, now, rule.max_age_seconds)
    if failed is not None:
        return "noise", f"{VOLATILE_REASON} (the legacy value failed its check: {failed})"
    return "noise", VOLATILE_REASON


@dataclass(frozen=True, config=_SCHEMA)
class Rules:
    """Ignored path patterns, volatile fields and expected differences. Validated on
    construction (pydantic's ValidationError, a ValueError), so a rule that could never be
    applied cannot exist. Sections are tuples (lists are copied into them): the rules stay
    hashable and the caller's lists can change freely."""

    ignore: Annotated[tuple[_Pattern, ...], BeforeValidator(_none_is_empty)] = ()
    volatile: Annotated[tuple[Volatile, ...], BeforeValidator(_none_is_empty)] = ()
    expected: Annotated[tuple[Expected, ...], BeforeValidator(_none_is_empty)] = ()

    def masks(self, path: str) -> bool:
        """True when an ignore or volatile rule covers `path`: its value is never compared
        exactly, so it cannot tell list elements apart either."""
        return any(matches(p, path) for p in self.ignore) or any(
            matches(v.path, path) for v in self.volatile
        )

    def entries(self) -> tuple[Rule, ...]:
        """Every rule, in the order they are tried."""
        return (*self.ignore, *self.volatile, *self.expected)

    def match(
        self,
        difference: Difference,
        endpoint: str | None = None,
        *,
        now: float | None = None,
        usage: RuleUsage | None = None,
    ) -> tuple[Severity, str] | None:
        """The severity and reason the first matching rule gives `difference` (None when no
        rule matches), recording the rule in `usage`. `endpoint` ("POST /api/v1/chat") is
        the request's, for endpoint-scoped expected rules; `now` (epoch seconds) is the
        clock when None, read only by timestamp checks."""
        path = difference.path
        verdict: tuple[Severity, str] | None = None
        rule: Rule | None = None
        if (found := next((p for p in self.ignore if matches(p, path)), None)) is not None:
            rule, verdict = found, ("ignored", f"ignored: {found}")
        elif (field := next((v for v in self.volatile if matches(v.path, path)), None)) is not None:
            clock = time.time() if now is None else now
            rule, verdict = field, _judge(field, difference, clock)
            new = difference.kind in ("added", "header_added") and verdict[0] != "breaking"
            if new and (known := self._expected(difference, endpoint)) is not None:
                # A volatile field new in the candidate, its value checked, which an expected
                # rule accepts where it appears (FastAPI's chat `timestamp`): expected.
                if usage is not None:
                    usage.record(field)
                rule, verdict = known, ("expected", known.reason)
        elif (known := self._expected(difference, endpoint)) is not None:
            rule, verdict = known, ("expected", known.reason)
        if rule is not None and usage is not None:
            usage.record(rule)
        return verdict

    def _expected(self, difference: Difference, endpoint: str | None) -> Expected | None:
        for rule in self.expected:
            if rule.kind is not None and rule.kind != difference.kind:
                continue
            if rule.endpoint is not None and not _endpoint_matches(rule.endpoint, endpoint):
                continue
            if rule.tokens and not rule.adds_only_tokens(difference):
                continue
            if matches(rule.path, difference.path):
                return rule
        return None


class RuleUsage:
    """Which rules decided a difference during a run, and how often; the rest are stale."""

    def __init__(self) -> None:
        self._counts: Counter[Rule] = Counter()

    def record(self, rule: Rule) -> None:
        """Note that `rule` decided one difference."""
        self._counts[rule] += 1

    def count(self, rule: Rule) -> int:
        """How many differences `rule` decided."""
        return self._counts[rule]

    def stale(self, rules: Rules) -> list[str]:
        """The names (`describe`) of the rules in `rules` that never matched, in file order."""
        return list(dict.fromkeys(describe(r) for r in rules.entries() if not self._counts[r]))


# --- loading ----------------------------------------------------------------------------------

_SECTIONS = ("ignore", "volatile", "expected")
_RULES = TypeAdapter(Rules)


def parse_rules(data: Any, source: str = "<rules>") -> Rules:
    """Rules from parsed YAML/JSON `data` (None is no rules); RulesError naming `source` and
    the bad entry on any schema problem."""
    if data is None:
        return Rules()
    try:
        return _RULES.validate_python(data)
    except ValidationError as exc:
        raise RulesError(f"{source}: {_rules_problem(first_error(exc), data)}") from None


def _rules_problem(error: ErrorDetails, data: Any) -> str:
    loc = error["loc"]
    if not loc:
        return f"must be a mapping of {', '.join(_SECTIONS)}, not {show(data)}"
    if len(loc) == 1 and error["type"] in UNKNOWN_FIELD:
        return f"unknown section {show(loc[0])} (known: {', '.join(_SECTIONS)})"
    if len(loc) == 1:  # a whole section
        return ": ".join(explain_error(error, Rules))
    section, index = loc[0], loc[1]
    where, problem = explain_error(error, Rules, skip=2)
    # The index alone is hard to find in a long file; the path, when there is one, is not.
    try:
        entry = data[section][index]
    except (LookupError, TypeError):  # a section given as a set, say: no entry to show
        entry = None
    path = entry.get("path") if isinstance(entry, Mapping) and section != "ignore" else None
    label = f"{section}[{index}] ({path})" if isinstance(path, str) else f"{section}[{index}]"
    return f"{label}: {where}: {problem}" if where else f"{label}: {problem}"
