"""Parity rules: loading and validation, pattern matching, volatile checks, precedence, and
stale-rule detection, as tables without any app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.diff import (
    Difference,
    Expected,
    Response,
    Rules,
    RulesError,
    RuleUsage,
    Volatile,
    check_volatile,
    describe,
    diff,
    matches,
    parse_rules,
)
from parity_tests.yaml_files import load_rules

NOW = 1_750_000_000.0
UUID = "123e4567-e89b-42d3-a456-426614174000"


def response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status,
        {"Content-Type": "application/json"} if headers is None else headers,
        json.dumps(body).encode(),
    )


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- loading --------------------------------------------------------------------------------

VALID = """\
# Differences between the legacy chatbot and its FastAPI successor.
ignore:
  - header:X-Request-ID
  - $.debug.**
volatile:
  - path: $.processing_time_ms
    check: duration_ms
  - path: $.timestamp
    check: timestamp
    max_age_seconds: 60
  - path: $.history[*].at
    check: iso8601
expected:
  - path: $.environment
    reason: FastAPI reports its environment
    kind: added
    endpoint: GET /health
  - path: '$["error_code"]'
    reason: FastAPI adds a machine-readable code
"""


def test_load_rules_reads_every_section(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, VALID)) == Rules(
        ignore=("header:X-Request-ID", "$.debug.**"),
        volatile=(
            Volatile("$.processing_time_ms", "duration_ms"),
            Volatile("$.timestamp", "timestamp", max_age_seconds=60),
            Volatile("$.history[*].at", "iso8601"),
        ),
        expected=(
            Expected("$.environment", "FastAPI reports its environment", "added", "GET /health"),
            Expected('$["error_code"]', "FastAPI adds a machine-readable code"),
        ),
    )


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "ignore:\nvolatile: []\n"])
def test_an_empty_rules_file_is_no_rules(tmp_path: Path, text: str) -> None:
    assert load_rules(write(tmp_path, text)) == Rules()


def test_parse_rules_takes_parsed_data_and_names_its_source() -> None:
    assert parse_rules({"ignore": ["status"]}) == Rules(ignore=("status",))
    with pytest.raises(RulesError) as caught:
        parse_rules({"ignore": ["nope"]}, source="corpus/rules.json")
    assert str(caught.value) == (
        "corpus/rules.json: ignore[0]: bad pattern 'nope': a pattern is 'status', "
        "'header:<name>' or a JSON path starting with $"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- $.a\n", "must be a mapping of ignore, volatile, expected, not ['$.a']"),
        ("1: []\n", "unknown section 1 (known: ignore, volatile, expected)"),
        (
            "ignored:\n  - $.a\n",
            "unknown section 'ignored' (known: ignore, volatile, expected)",
        ),
        ("ignore: $.a\n", "ignore: must be a list, not '$.a'"),
        ("ignore: {a: 1}\n", "ignore: must be a list, not {'a': 1}"),
        ("ignore:\n  - {path: $.a}\n", "ignore[0]: must be a string, not {'path': '$.a'}"),
        (
            "ignore:\n  - history[*]\n",
            "ignore[0]: bad pattern 'history[*]': a pattern is 'status', 'header:<name>' "
            "or a JSON path starting with $",
        ),
        ("ignore:\n  - $.a..b\n", "ignore[0]: bad pattern '$.a..b': empty key at 3"),
        (
            "ignore:\n  - $.a\n  - $.b*\n",
            "ignore[1]: bad pattern '$.b*': key 'b*' at 1 must be written as [\"...\"]",
        ),
        (
            "ignore:\n  - 'header:a b'\n",
            "ignore[0]: bad pattern 'header:a b': 'a b' is not a header name",
        ),
        ("volatile:\n  - $.a\n", "volatile[0]: must be a mapping, not '$.a'"),
        (
            "volatile:\n  - {path: $.a, check: uuid, max_age: 3}\n",
            "volatile[0] ($.a): unknown field 'max_age' (known: path, check, max_age_seconds)",
        ),
        (
            "volatile:\n  - {path: $.a, check: uuid4}\n",
            "volatile[0] ($.a): unknown check 'uuid4' "
            "(one of timestamp, uuid, id, duration_ms, number, string, iso8601)",
        ),
        ("volatile:\n  - {path: $.a}\n", "volatile[0] ($.a): missing 'check'"),
        (
            "volatile:\n  - {path: $.a, check: timestamp, max_age_seconds: -1}\n",
            "volatile[0] ($.a): max_age_seconds: must be greater than 0, not -1",
        ),
        (
            "volatile:\n  - {path: $.a, check: timestamp, max_age_seconds: true}\n",
            "volatile[0] ($.a): max_age_seconds: must be a number, not True",
        ),
        (
            "volatile:\n  - {path: $.a, check: timestamp, max_age_seconds: '60'}\n",
            "volatile[0] ($.a): max_age_seconds: must be a number, not '60'",
        ),
        (
            "volatile:\n  - {path: '$.a[', check: uuid}\n",
            "volatile[0] ($.a[): path: bad pattern '$.a[': unexpected '[' at 3",
        ),
        ("expected:\n  - {path: $.a}\n", "expected[0] ($.a): missing 'reason'"),
        (
            "expected:\n  - {path: $.a, reason: '  '}\n",
            "expected[0] ($.a): reason: must be a non-empty string, not '  '",
        ),
        (
            "expected:\n  - {path: $.a, reason: 3}\n",
            "expected[0] ($.a): reason: must be a string, not 3",
        ),
        (
            "expected:\n  - {path: $.a, reason: r, scope: GET /}\n",
            "expected[0] ($.a): unknown field 'scope' "
            "(known: path, reason, kind, endpoint, tokens)",
        ),
        (
            "expected:\n  - {path: $.a, reason: r, kind: removed}\n",
            "expected[0] ($.a): unknown kind 'removed' (one of status, header_missing, "
            "header_added, header_value, missing, added, type, value, order, body)",
        ),
        (
            "expected:\n  - {path: $.a, reason: r, endpoint: /health}\n",
            "expected[0] ($.a): endpoint: must look like 'GET /health', not '/health'",
        ),
        ("expected:\n  - {path: 5, reason: r}\n", "expected[0]: path: must be a string, not 5"),
        (
            "ignore: [\n",
            "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        ),
    ],
)
def test_each_schema_error_is_one_line_naming_the_file_and_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text, name="parity-rules.yaml")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value) == f"{path}: {message}"


def test_an_unreadable_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RulesError, match=r"absent\.yaml: cannot read: .*No such file"):
        load_rules(path)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rules(ignore=("$.a[",)),
        lambda: Volatile("$.a", "uuid4"),  # type: ignore[arg-type]
        lambda: Volatile("nope", "uuid"),
        lambda: Volatile("$.a", "timestamp", max_age_seconds=0),
        lambda: Expected("$.a", ""),
        lambda: Expected("$.a", "r", kind="gone"),  # type: ignore[arg-type]
        lambda: Expected("$.a", "r", endpoint="health"),
        lambda: Volatile("$.a", "id", max_age=5),  # type: ignore[call-arg]
        lambda: Rules(ignored=("$.a",)),  # type: ignore[call-arg]
    ],
)
def test_rules_are_validated_on_construction(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


def test_rules_copy_the_callers_lists() -> None:
    patterns = ["$.a"]
    rules = Rules(ignore=patterns)  # type: ignore[arg-type]
    patterns.append("$.b")
    assert rules == Rules(ignore=("$.a",))
    assert hash(rules) == hash(Rules(ignore=("$.a",)))


# --- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("$.a", "$.a", True),
        ("$.a", "$.a.b", False),
        ("$.a", "$.ab", False),
        ('$["a.b"]', '$["a.b"]', True),
        ('$["a"]', "$.a", True),
        ("$.history[*].at", "$.history[2].at", True),
        ("$.history[*].at", "$.history[2].text", False),
        ("$.history[*].at", "$.history.x.at", False),  # [*] is an index, not a key
        ("$.history[*].at", "$.history[1][0].at", False),  # exactly one segment
        ("$.*.id", "$.user.id", True),
        ("$.*.id", "$[0].id", False),  # .* is a key, not an index
        ("$.*.id", '$["a.b"].id', True),
        ("$.**", "$", True),
        ("$.**", "$.a[0].b", True),
        ("$.**", "status", False),
        ("$.**.at", "$.at", True),  # ** may stand for nothing
        ("$.**.at", "$.history[3].at", True),
        ("$.**.at", "$.history[3].at.x", False),
        ("$.a.**.c.**.e", "$.a.b.c.d.e", True),
        ("$.a.**.c.**.e", "$.a.c.e", True),
        ("$.a.**.c.**.e", "$.a.b.d.e", False),
        ("$[0]", "$[0]", True),
        ("$[0]", "$.0", False),  # the index 0 is not the key "0"
        ('$["*"]', '$["*"]', True),
        ('$["*"]', "$.a", False),  # a quoted star is a literal key
        ("$", "$", True),
        ("$", "$.a", False),
        ("status", "status", True),
        ("status", "$.status", False),
        ("header:Retry-After", "header:retry-after", True),
        ("header:retry-after", "header:vary", False),
        ("header:*", "header:vary", True),
        ("header:*", "status", False),
    ],
)
def test_pattern_matching(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


# --- volatile checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        ("timestamp", NOW, None),
        ("timestamp", int(NOW) - 300, None),
        ("timestamp", NOW + 299.5, None),  # clocks of two hosts may disagree either way
        ("timestamp", NOW - 301, f"timestamp {NOW - 301!r} is more than 300 s away from now"),
        ("timestamp", NOW * 1000, f"timestamp {NOW * 1000!r} is more than 300 s away from now"),
        ("timestamp", True, "timestamp must be a number of epoch seconds, got True"),
        (
            "timestamp",
            "1750000000",
            "timestamp must be a number of epoch seconds, got '1750000000'",
        ),
        ("timestamp", None, "timestamp must be a number of epoch seconds, got None"),
        ("uuid", UUID, None),
        ("uuid", UUID.upper(), f"not a canonical UUID: {UUID.upper()!r}"),
        ("uuid", UUID.replace("-", ""), f"not a canonical UUID: {UUID.replace('-', '')!r}"),
        ("uuid", UUID + "\n", f"not a canonical UUID: {UUID + chr(10)!r}"),
        ("uuid", 5, "uuid must be a string, got 5"),
        ("id", "sess_123:a.b-c", None),
        ("id", "x" * 128, None),
        ("id", "x" * 129, "not a valid id: " + repr("x" * 129)[:57] + "..."),
        ("id", "has space", "not a valid id: 'has space'"),
        ("id", "", "not a valid id: ''"),
        ("id", "abc\n", "not a valid id: 'abc\\n'"),
        ("duration_ms", 0, None),
        ("duration_ms", 4.7, None),
        ("duration_ms", -1, "duration_ms must be a non-negative number, got -1"),
        ("duration_ms", False, "duration_ms must be a non-negative number, got False"),
        ("duration_ms", "4", "duration_ms must be a non-negative number, got '4'"),
        ("duration_ms", float("nan"), "duration_ms must be a non-negative number, got nan"),
        ("iso8601", "2025-06-15T12:00:00Z", None),
        ("iso8601", "2025-06-15T12:00:00.123456+00:00", None),
        ("iso8601", "15/06/2025", "not an ISO 8601 date-time: '15/06/2025'"),
        ("iso8601", 1750000000, "iso8601 must be a string, got 1750000000"),
        ("number", -2.5, None),
        ("number", True, "expected a number, got True"),
        ("number", "1", "expected a number, got '1'"),
        ("string", "", None),
        ("string", None, "string must be a string, got None"),
    ],
)
def test_check_volatile(check: Any, value: Any, expected: str | None) -> None:
    assert check_volatile(check, value, NOW) == expected


def test_a_timestamp_check_uses_its_max_age() -> None:
    assert check_volatile("timestamp", NOW - 30, NOW, max_age_seconds=60) is None
    assert check_volatile("timestamp", NOW - 61, NOW, max_age_seconds=60) == (
        f"timestamp {NOW - 61!r} is more than 60 s away from now"
    )


# --- rules applied by diff ------------------------------------------------------------------

FAILED = "volatile field failed its check: "


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        (
            {"id": "a"},
            {"id": "b"},
            [Difference("$.id", "value", "a", "b", "noise", "volatile")],
        ),
        (
            {"id": "a"},
            {"id": "not an id"},
            [
                Difference(
                    "$.id",
                    "value",
                    "a",
                    "not an id",
                    "breaking",
                    FAILED + "not a valid id: 'not an id'",
                )
            ],
        ),
        (
            {"id": "a"},
            {"id": 7},
            [Difference("$.id", "type", "a", 7, "breaking", FAILED + "id must be a string, got 7")],
        ),
        (
            {"id": "a"},
            {},
            [
                Difference(
                    "$.id", "missing", "a", None, "breaking", FAILED + "absent from the candidate"
                )
            ],
        ),
        (
            {},
            {"id": "b"},
            [Difference("$.id", "added", None, "b", "additive", "volatile, new in the candidate")],
        ),
        (
            {},
            {"id": ""},
            [Difference("$.id", "added", None, "", "breaking", FAILED + "not a valid id: ''")],
        ),
        (
            {"id": "not an id"},
            {"id": "b"},
            [
                Difference(
                    "$.id",
                    "value",
                    "not an id",
                    "b",
                    "noise",
                    "volatile (the legacy value failed its check: not a valid id: 'not an id')",
                )
            ],
        ),
    ],
)
def test_volatile_fields(
    legacy: dict[str, Any], candidate: dict[str, Any], expected: list[Difference]
) -> None:
    rules = Rules(volatile=(Volatile("$.id", "id"),))
    assert diff(response(legacy), response(candidate), rules=rules, now=NOW) == expected


def test_volatile_timestamps_are_judged_against_now() -> None:
    rules = Rules(volatile=(Volatile("$.timestamp", "timestamp", max_age_seconds=10),))
    legacy, candidate = response({"timestamp": NOW - 2}), response({"timestamp": NOW - 1})
    assert diff(legacy, candidate, rules=rules, now=NOW) == [
        Difference("$.timestamp", "value", NOW - 2, NOW - 1, "noise", "volatile")
    ]
    assert diff(legacy, candidate, rules=rules, now=NOW + 60) == [
        Difference(
            "$.timestamp",
            "value",
            NOW - 2,
            NOW - 1,
            "breaking",
            f"{FAILED}timestamp {NOW - 1!r} is more than 10 s away from now",
        )
    ]


def test_volatile_header_values() -> None:
    rules = Rules(volatile=(Volatile("header:x-request-id", "uuid"),))
    legacy = response({}, headers={"X-Request-ID": UUID})
    fresh = UUID.replace("1", "2")
    assert diff(
        legacy, response({}, headers={"X-Request-ID": fresh}), headers=["x-request-id"], rules=rules
    ) == [Difference("header:x-request-id", "header_value", UUID, fresh, "noise", "volatile")]
    assert diff(legacy, response({}, headers={}), headers=["x-request-id"], rules=rules) == [
        Difference(
            "header:x-request-id",
            "header_missing",
            UUID,
            None,
            "breaking",
            FAILED + "absent from the candidate",
        )
    ]


def test_ignored_paths() -> None:
    rules = Rules(ignore=("$.debug.**", "header:vary", "status"))
    legacy = response({"debug": {"a": 1}, "x": 1}, status=200, headers={"Vary": "Origin"})
    candidate = response({"debug": {"a": 2, "b": 1}, "x": 2}, status=201, headers={})
    assert diff(legacy, candidate, rules=rules) == [
        Difference("status", "status", 200, 201, "ignored", "ignored: status"),
        Difference(
            "header:vary", "header_missing", "Origin", None, "ignored", "ignored: header:vary"
        ),
        Difference("$.debug.a", "value", 1, 2, "ignored", "ignored: $.debug.**"),
        Difference("$.debug.b", "added", None, 1, "ignored", "ignored: $.debug.**"),
        Difference("$.x", "value", 1, 2, "breaking"),
    ]


HEALTH_RULES = Rules(
    expected=(
        Expected("$.environment", "FastAPI reports its environment", endpoint="GET /health"),
        Expected(
            "$.*",
            "FastAPI adds fields to session records",
            "added",
            endpoint="get /api/v1/chat/sessions/{id}",
        ),
    )
)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            "GET /health",
            [
                Difference(
                    "$.environment",
                    "added",
                    None,
                    "dev",
                    "expected",
                    "FastAPI reports its environment",
                )
            ],
        ),
        (
            "GET  /health?verbose=1",
            [
                Difference(
                    "$.environment",
                    "added",
                    None,
                    "dev",
                    "expected",
                    "FastAPI reports its environment",
                )
            ],
        ),
        ("POST /health", [Difference("$.environment", "added", None, "dev", "additive")]),
        ("GET /health/detailed", [Difference("$.environment", "added", None, "dev", "additive")]),
        (None, [Difference("$.environment", "added", None, "dev", "additive")]),
        (
            "GET /api/v1/chat/sessions/abc",
            [
                Difference(
                    "$.environment",
                    "added",
                    None,
                    "dev",
                    "expected",
                    "FastAPI adds fields to session records",
                )
            ],
        ),
    ],
)
def test_expected_rules_scoped_to_an_endpoint(
    endpoint: str | None, expected: list[Difference]
) -> None:
    got = diff(
        response({}), response({"environment": "dev"}), rules=HEALTH_RULES, endpoint=endpoint
    )
    assert got == expected


def test_expected_rules_scoped_to_a_kind() -> None:
    rules = Rules(expected=(Expected("$.*", "FastAPI adds fields", kind="added"),))
    got = diff(response({"a": 1}), response({"a": 2, "b": 3}), rules=rules)
    assert got == [
        Difference("$.a", "value", 1, 2, "breaking"),
        Difference("$.b", "added", None, 3, "expected", "FastAPI adds fields"),
    ]


def test_ignore_wins_over_volatile_which_wins_over_expected() -> None:
    rules = Rules(
        ignore=("$.a",),
        volatile=(Volatile("$.a", "number"), Volatile("$.b", "number")),
        expected=(Expected("$.*", "anything goes"),),
    )
    got = diff(response({"a": 1, "b": 1, "c": 1}), response({"a": 2, "b": 2, "c": 2}), rules=rules)
    assert got == [
        Difference("$.a", "value", 1, 2, "ignored", "ignored: $.a"),
        Difference("$.b", "value", 1, 2, "noise", "volatile"),
        Difference("$.c", "value", 1, 2, "expected", "anything goes"),
    ]


def test_match_alone() -> None:
    rules = Rules(expected=(Expected("status", "FastAPI answers 422 here", kind="status"),))
    difference = Difference("status", "status", 400, 422, "breaking")
    assert rules.match(difference) == ("expected", "FastAPI answers 422 here")
    assert rules.match(Difference("$.a", "value", 1, 2, "breaking")) is None


# --- stale rules ----------------------------------------------------------------------------


def test_rules_that_never_matched_are_stale() -> None:
    rules = Rules(
        ignore=("header:vary", "$.debug"),
        volatile=(Volatile("$.took", "duration_ms"), Volatile("$.id", "uuid")),
        expected=(
            Expected("$.environment", "FastAPI reports it", "added", "GET /health"),
            Expected("$.tokens_used", "FastAPI counts tokens"),
        ),
    )
    usage = RuleUsage()
    diff(
        response({"took": 1, "debug": 1}),
        response({"took": 2, "debug": 2, "tokens_used": 3, "environment": "dev"}),
        rules=rules,
        usage=usage,
        endpoint="POST /api/v1/chat",
    )
    diff(response({"took": 1}), response({"took": 5}), rules=rules, usage=usage)

    assert usage.stale(rules) == [
        "ignore header:vary",
        "volatile $.id (uuid)",
        "expected $.environment added on GET /health: FastAPI reports it",
    ]
    assert [usage.count(rule) for rule in rules.entries()] == [0, 1, 2, 0, 0, 1]


def test_a_volatile_rule_that_failed_its_check_still_matched() -> None:
    rules = Rules(volatile=(Volatile("$.took", "duration_ms"),))
    usage = RuleUsage()
    diff(response({"took": 1}), response({"took": -1}), rules=rules, usage=usage)
    assert usage.stale(rules) == []
    assert usage.stale(Rules(ignore=("$.x",))) == ["ignore $.x"]


def test_describe_names_each_kind_of_rule() -> None:
    assert [
        describe("$.a"),
        describe(Volatile("$.t", "timestamp")),
        describe(Expected("$.e", "why")),
        describe(Expected("$.e", "why", kind="added")),
    ] == ["ignore $.a", "volatile $.t (timestamp)", "expected $.e: why", "expected $.e added: why"]


def test_masks_covers_ignored_and_volatile_paths_only() -> None:
    rules = Rules(
        ignore=("$.debug.**",),
        volatile=(Volatile("$.h[*].at", "iso8601"),),
        expected=(Expected("$.version", "each stack has its own"),),
    )
    assert [
        rules.masks(path) for path in ("$.debug.a.b", "$.h[3].at", "$.h[3].text", "$.version")
    ] == [True, True, False, False]


@pytest.mark.parametrize(
    ("stamp", "severity"),
    [(NOW, "expected"), ("yesterday", "breaking")],
    ids=["checked-then-expected", "failing-its-check"],
)
def test_a_volatile_field_new_in_the_candidate_may_be_expected_where_it_appears(
    stamp: object, severity: str
) -> None:
    rules = Rules(
        volatile=(Volatile("$.timestamp", "timestamp"),),
        expected=(Expected("$.timestamp", "stamped", kind="added", endpoint="POST /chat"),),
    )
    usage = RuleUsage()
    [found] = diff(
        response({"ok": True}),
        response({"ok": True, "timestamp": stamp}),
        rules=rules,
        now=NOW,
        endpoint="POST /chat",
        usage=usage,
    )
    assert found.severity == severity
    # Elsewhere the expected rule does not apply: a new volatile field stays additive.
    [elsewhere] = diff(
        response({"ok": True}), response({"ok": True, "timestamp": NOW}), rules=rules, now=NOW
    )
    assert elsewhere.severity == "additive"
