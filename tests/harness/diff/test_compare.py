"""The parity diff, as pure functions: pairs of replies in, whole lists of differences out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.diff import (
    DEFAULT_HEADERS,
    HEADER_ORDER_REASON,
    LONGER_LIST_REASON,
    NOISE_REASON,
    Difference,
    Response,
    Rules,
    Volatile,
    Wildcard,
    diff,
    flatten,
    is_unexpected,
    key_segment,
    noisy_paths,
    parse_path,
    summarize,
)
from parity_tests.yaml_files import load_rules

NOW = 1_750_000_000.0
JSON = {"Content-Type": "application/json"}


def response(
    body: Any = None, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response whose body is `body` as JSON (bytes are taken as they are)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, JSON if headers is None else headers, raw)


def typed(value: Any) -> Any:
    """`value` with every scalar paired with its type, so that True and 1 (equal in Python)
    compare unequal."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


# --- flatten and paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, {"$": 5}),
        (None, {"$": None}),
        ({}, {"$": {}}),
        ([], {"$": []}),
        ({"a": {"b": 1, "c": "x"}}, {"$.a.b": 1, "$.a.c": "x"}),
        (
            {"l": [1, [2, 3], {"k": None}]},
            {"$.l[0]": 1, "$.l[1][0]": 2, "$.l[1][1]": 3, "$.l[2].k": None},
        ),
        ({"e": {}, "f": [], "g": [{}]}, {"$.e": {}, "$.f": [], "$.g[0]": {}}),
        (
            {"flag": True, "n": 1, "x": 1.0, "z": 0, "off": False},
            {"$.flag": True, "$.n": 1, "$.x": 1.0, "$.z": 0, "$.off": False},
        ),
        (
            {"a.b": 1, "c[0]": 2, "sp ace": 3, "": 4, "*": 5, 'q"t': 6, "ok_key-1:x": 7},
            {
                '$["a.b"]': 1,
                '$["c[0]"]': 2,
                '$["sp ace"]': 3,
                '$[""]': 4,
                '$["*"]': 5,
                '$["q\\"t"]': 6,
                "$.ok_key-1:x": 7,
            },
        ),
    ],
)
def test_flatten(value: Any, expected: dict[str, Any]) -> None:
    assert typed(flatten(value)) == typed(expected)


def test_flatten_keeps_document_order_and_takes_a_prefix() -> None:
    assert list(flatten({"b": 1, "a": [2]}, prefix="$.x").items()) == [
        ("$.x.b", 1),
        ("$.x.a[0]", 2),
    ]


@pytest.mark.parametrize(
    ("key", "segment"),
    [
        ("name", ".name"),
        ("café", ".café"),
        ("0", ".0"),
        ("a.b", '["a.b"]'),
        ("a]", '["a]"]'),
        ("tab\there", '["tab\\there"]'),
        ("**", '["**"]'),
        ("back\\slash", '["back\\\\slash"]'),
    ],
)
def test_key_segment_quotes_only_when_needed(key: str, segment: str) -> None:
    assert key_segment(key) == segment
    assert parse_path("$" + segment) == (key,)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("$", ()),
        ("$.a.b", ("a", "b")),
        ("$.history[2].text", ("history", 2, "text")),
        ('$["a.b"][10]', ("a.b", 10)),
        ("$.0[0]", ("0", 0)),
        ('$["a"]', ("a",)),
    ],
)
def test_parse_path(path: str, segments: tuple[Any, ...]) -> None:
    assert parse_path(path) == segments


@pytest.mark.parametrize(
    ("pattern", "segments"),
    [
        ("$.history[*].at", ("history", Wildcard.INDEX, "at")),
        ("$.*.id", (Wildcard.KEY, "id")),
        ("$.**.at", (Wildcard.DEPTH, "at")),
        ('$["*"]', ("*",)),
    ],
)
def test_parse_pattern(pattern: str, segments: tuple[Any, ...]) -> None:
    assert parse_path(pattern, wildcards=True) == segments


@pytest.mark.parametrize(
    "path",
    [
        "",
        "a.b",
        "$.",
        "$..a",
        "$.a b",
        "$.a*",
        "$[01]",
        "$[x]",
        "$[-1]",
        '$["open',
        '$["a"',
        "$a",
        "$.*",
        "$[*]",
        "$.**",
    ],
)
def test_parse_path_refuses(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


def test_every_flattened_path_parses_back_to_its_keys() -> None:
    value = {"a.b": {"": [{"x y": 1}]}, "plain": [[True]]}
    assert [parse_path(path) for path in flatten(value)] == [
        ("a.b", "", 0, "x y"),
        ("plain", 0, 0),
    ]


# --- bodies ---------------------------------------------------------------------------------


def test_identical_replies_have_no_difference() -> None:
    body = {"response": "hi", "session_id": "s", "history": [{"role": "user", "at": 1}]}
    assert diff(response(body), response(body)) == []


def test_key_order_and_whitespace_are_invisible() -> None:
    legacy = response(b'{"a": 1, "b": [1, 2]}')
    candidate = response(b'{"b":[1,2],"a":1}\n')
    assert diff(legacy, candidate) == []


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        ({"n": 1}, {"n": 1.0}, []),
        ({"n": 0}, {"n": -0.0}, []),
        ({"n": 10**20}, {"n": 1e20}, []),
        ({"n": 1}, {"n": 2}, [Difference("$.n", "value", 1, 2, "breaking")]),
        ({"s": "a"}, {"s": "b"}, [Difference("$.s", "value", "a", "b", "breaking")]),
        ({"b": True}, {"b": False}, [Difference("$.b", "value", True, False, "breaking")]),
        ({"n": "5"}, {"n": 5}, [Difference("$.n", "type", "5", 5, "breaking")]),
        ({"n": 1}, {"n": True}, [Difference("$.n", "type", 1, True, "breaking")]),
        ({"n": 0}, {"n": False}, [Difference("$.n", "type", 0, False, "breaking")]),
        ({"n": None}, {"n": 0}, [Difference("$.n", "type", None, 0, "breaking")]),
        ({"n": ""}, {"n": None}, [Difference("$.n", "type", "", None, "breaking")]),
        ({"o": {}}, {"o": []}, [Difference("$.o", "type", {}, [], "breaking")]),
        (
            {"o": {"x": 1, "y": 2}},
            {"o": [1, 2]},
            [Difference("$.o", "type", {"x": 1, "y": 2}, [1, 2], "breaking")],
        ),
        (
            {"o": {"x": 1}},
            {"o": None},
            [Difference("$.o", "type", {"x": 1}, None, "breaking")],
        ),
        ([1], {"a": 1}, [Difference("$", "type", [1], {"a": 1}, "breaking")]),
    ],
)
def test_values_and_types(legacy: Any, candidate: Any, expected: list[Difference]) -> None:
    got = diff(response(legacy), response(candidate))
    assert got == expected
    # Python holds 1 == True: check the sides were not swapped or coerced.
    assert [typed([d.legacy, d.candidate]) for d in got] == [
        typed([d.legacy, d.candidate]) for d in expected
    ]


def test_a_dropped_field_is_missing_and_breaking() -> None:
    legacy = response({"response": "hi", "session_id": "s"})
    candidate = response({"response": "hi"})
    assert diff(legacy, candidate) == [Difference("$.session_id", "missing", "s", None, "breaking")]


def test_a_dropped_subtree_is_one_missing_difference_at_its_key() -> None:
    legacy = response({"meta": {"a": 1, "b": [1, 2]}, "x": 1})
    candidate = response({"x": 1})
    assert diff(legacy, candidate) == [
        Difference("$.meta", "missing", {"a": 1, "b": [1, 2]}, None, "breaking")
    ]


def test_an_extra_field_is_added_and_additive() -> None:
    legacy = response({"status": "healthy"})
    candidate = response({"status": "healthy", "environment": {"name": "dev"}})
    assert diff(legacy, candidate) == [
        Difference("$.environment", "added", None, {"name": "dev"}, "additive")
    ]


def test_differences_are_reported_deep_with_quoted_keys_in_key_order() -> None:
    legacy = response({"z": 1, "history": [{"text": "a", "at": 1}], "a.b": {"c": 1}})
    candidate = response({"history": [{"text": "b", "at": 1}], "a.b": {"c": 2}, "z": 1})
    assert diff(legacy, candidate) == [
        Difference('$["a.b"].c', "value", 1, 2, "breaking"),
        Difference("$.history[0].text", "value", "a", "b", "breaking"),
    ]


@pytest.mark.parametrize(
    ("legacy", "candidate"),
    [
        ([1, 2, 3], [3, 1, 2]),
        ([{"role": "user"}, {"role": "assistant"}], [{"role": "assistant"}, {"role": "user"}]),
        ([1, "1", True], [True, 1.0, "1"]),
        ([[1, 2], [3]], [[3], [1, 2]]),
    ],
)
def test_a_reordered_list_is_exactly_one_order_difference(
    legacy: list[Any], candidate: list[Any]
) -> None:
    assert diff(response({"l": legacy}), response({"l": candidate})) == [
        Difference("$.l", "order", legacy, candidate, "breaking")
    ]


def test_same_length_lists_with_other_elements_are_compared_by_index() -> None:
    # Not a reordering: the multisets differ (1 twice against 2 twice), and true is not 1.
    assert diff(response({"l": [1, 2, 2, 1]}), response({"l": [2, 1, 1, True]})) == [
        Difference("$.l[0]", "value", 1, 2, "breaking"),
        Difference("$.l[1]", "value", 2, 1, "breaking"),
        Difference("$.l[2]", "value", 2, 1, "breaking"),
        Difference("$.l[3]", "type", 1, True, "breaking"),
    ]


# A duplicated or dropped element is not a reordering: the same elements with other counts
# are compared index by index, so the element too many or too few is "added" or "missing",
# which noise never excuses, even where Flask's own answers vary in order.
@pytest.mark.parametrize(
    ("noise", "legacy", "candidate", "expected"),
    [
        (
            set(),
            [1, 1, 2],
            [1, 2],
            [
                Difference("$.l[1]", "value", 1, 2, "breaking"),
                Difference("$.l[2]", "missing", 2, None, "breaking"),
            ],
        ),
        (
            {"$.l"},
            [1, 1, 2],
            [1, 2],
            [
                Difference("$.l[1]", "value", 1, 2, "noise", NOISE_REASON),
                Difference("$.l[2]", "missing", 2, None, "breaking"),
            ],
        ),
        (
            set(),
            [1, 2],
            [1, 1, 2],
            [
                Difference("$.l[1]", "value", 2, 1, "breaking"),
                Difference("$.l[2]", "added", None, 2, "breaking", LONGER_LIST_REASON),
            ],
        ),
        (
            {"$.l"},
            [1, 2],
            [1, 1, 2],
            [
                Difference("$.l[1]", "value", 2, 1, "noise", NOISE_REASON),
                Difference("$.l[2]", "added", None, 2, "breaking", LONGER_LIST_REASON),
            ],
        ),
    ],
    ids=["dropped", "dropped-noisy", "duplicated", "duplicated-noisy"],
)
def test_a_duplicated_or_dropped_element_is_not_a_reordering(
    noise: set[str], legacy: list[int], candidate: list[int], expected: list[Difference]
) -> None:
    assert diff(response({"l": legacy}), response({"l": candidate}), noise=noise) == expected


def test_a_reordered_inner_list_is_reported_inside_its_element() -> None:
    legacy = response({"l": [{"tags": ["a", "b"]}, {"tags": []}]})
    candidate = response({"l": [{"tags": ["b", "a"]}, {"tags": []}]})
    assert diff(legacy, candidate) == [
        Difference("$.l[0].tags", "order", ["a", "b"], ["b", "a"], "breaking")
    ]


def test_volatile_fields_cannot_hide_a_reordered_list() -> None:
    # Each entry carries its own timestamp, different on every run: with the rule saying so,
    # the reordering is still one order difference, not a value difference per index.
    rules = Rules(volatile=(Volatile("$.h[*].at", "iso8601"),))
    legacy = {
        "h": [{"t": "a", "at": "2026-01-01T00:00:00"}, {"t": "b", "at": "2026-01-01T00:00:01"}]
    }
    moved = {
        "h": [{"t": "b", "at": "2026-01-02T00:00:00"}, {"t": "a", "at": "2026-01-02T00:00:01"}]
    }
    assert diff(response(legacy), response(moved), rules=rules) == [
        Difference("$.h", "order", legacy["h"], moved["h"], "breaking")
    ]
    # Same order, only the volatile field differs: index by index, classed by the rule.
    same = {"h": [{"t": "a", "at": "2026-01-02T00:00:00"}, {"t": "b", "at": "2026-01-02T00:00:01"}]}
    assert [
        (d.path, d.kind, d.severity) for d in diff(response(legacy), response(same), rules=rules)
    ] == [
        ("$.h[0].at", "value", "noise"),
        ("$.h[1].at", "value", "noise"),
    ]
    # Without the rule the timestamps make the elements different: compared by index.
    assert {d.kind for d in diff(response(legacy), response(moved))} == {"value"}


def test_a_shorter_list_misses_elements_and_a_longer_one_is_breaking_too() -> None:
    assert diff(response({"l": [1, 2, 3]}), response({"l": [1]})) == [
        Difference("$.l[1]", "missing", 2, None, "breaking"),
        Difference("$.l[2]", "missing", 3, None, "breaking"),
    ]
    assert diff(response({"l": []}), response({"l": [{"a": 1}]})) == [
        Difference("$.l[0]", "added", None, {"a": 1}, "breaking", LONGER_LIST_REASON)
    ]


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        (b"", b"", []),
        (b"Not found", b"Not found", []),
        (
            b"Not found",
            b"Not Found",
            [Difference("$", "body", "Not found", "Not Found", "breaking")],
        ),
        (b"", b"{}", [Difference("$", "body", "", "{}", "breaking")]),
        (b'{"a": 1}', b"<html>", [Difference("$", "body", '{"a": 1}', "<html>", "breaking")]),
        (b"\xff\xfe", b"\xff", [Difference("$", "body", "\\xff\\xfe", "\\xff", "breaking")]),
        # NaN is not JSON, so these are compared as bytes (as JSON, NaN != NaN would differ).
        (b'{"a": NaN}', b'{"a": NaN}', []),
        (
            b'{"a": NaN}',
            b'{"a":NaN}',
            [Difference("$", "body", '{"a": NaN}', '{"a":NaN}', "breaking")],
        ),
    ],
)
def test_bodies_that_are_not_both_json_are_compared_as_bytes(
    legacy: bytes, candidate: bytes, expected: list[Difference]
) -> None:
    assert diff(response(legacy), response(candidate)) == expected


def test_json_too_deep_to_walk_is_compared_as_bytes() -> None:
    # Deep enough for the parser, too deep for the recursive walk.
    deep = "[" * 700 + "{}" + "]" * 700
    other = "[" * 700 + "[]" + "]" * 700
    assert diff(response(deep.encode()), response(deep.encode())) == []
    assert diff(response(deep.encode()), response(other.encode())) == [
        Difference("$", "body", deep, other, "breaking")
    ]


# --- status and headers ---------------------------------------------------------------------


def test_a_status_change_is_breaking_and_comes_first() -> None:
    legacy = response({"error": "Not found"}, status=404)
    candidate = response({"detail": "Not Found"}, status=405, headers={})
    assert diff(legacy, candidate) == [
        Difference("status", "status", 404, 405, "breaking"),
        Difference("header:content-type", "header_missing", "application/json", None, "breaking"),
        Difference("$.detail", "added", None, "Not Found", "additive"),
        Difference("$.error", "missing", "Not found", None, "breaking"),
    ]


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        ({"Retry-After": "5"}, {"retry-after": "5"}, []),
        (
            {"Retry-After": "5"},
            {},
            [Difference("header:retry-after", "header_missing", "5", None, "breaking")],
        ),
        (
            {},
            {"Vary": "Origin"},
            [Difference("header:vary", "header_added", None, "Origin", "additive")],
        ),
        (
            {"Retry-After": "5"},
            {"Retry-After": "10"},
            [Difference("header:retry-after", "header_value", "5", "10", "breaking")],
        ),
        ({"Access-Control-Allow-Origin": "*"}, {"access-control-allow-origin": " * "}, []),
        (
            {"Access-Control-Allow-Origin": "*"},
            {"Access-Control-Allow-Origin": "http://a.test"},
            [
                Difference(
                    "header:access-control-allow-origin",
                    "header_value",
                    "*",
                    "http://a.test",
                    "breaking",
                )
            ],
        ),
        (
            {"Content-Type": "application/json; charset=utf-8"},
            {"content-type": "Application/JSON;charset=UTF-8"},
            [],
        ),
        (
            {"Content-Type": "application/json"},
            {"Content-Type": "application/problem+json"},
            [
                Difference(
                    "header:content-type",
                    "header_value",
                    "application/json",
                    "application/problem+json",
                    "breaking",
                )
            ],
        ),
        ({"Allow": "POST, OPTIONS"}, {"Allow": "post,options"}, []),
        (
            {"Allow": "POST, OPTIONS"},
            {"Allow": "OPTIONS, POST"},
            [
                Difference(
                    "header:allow",
                    "order",
                    "POST, OPTIONS",
                    "OPTIONS, POST",
                    "noise",
                    HEADER_ORDER_REASON,
                )
            ],
        ),
        (
            {"Allow": "POST, OPTIONS"},
            {"Allow": "GET, POST, OPTIONS"},
            [
                Difference(
                    "header:allow",
                    "header_value",
                    "POST, OPTIONS",
                    "GET, POST, OPTIONS",
                    "breaking",
                )
            ],
        ),
        (
            {"Access-Control-Allow-Headers": "content-type, x-user-id"},
            {"Access-Control-Allow-Headers": "X-User-ID, Content-Type"},
            [
                Difference(
                    "header:access-control-allow-headers",
                    "order",
                    "content-type, x-user-id",
                    "X-User-ID, Content-Type",
                    "noise",
                    HEADER_ORDER_REASON,
                )
            ],
        ),
        # Headers that are not chosen are not compared.
        ({"Server": "Werkzeug", "Date": "x"}, {"Server": "uvicorn"}, []),
    ],
)
def test_headers(
    legacy: dict[str, str], candidate: dict[str, str], expected: list[Difference]
) -> None:
    assert diff(response({}, headers=legacy), response({}, headers=candidate)) == expected


def test_the_chosen_headers_can_be_given_and_come_in_that_order() -> None:
    legacy = response({}, headers={"X-Request-ID": "a", "Vary": "Origin", "Allow": "GET"})
    candidate = response({}, headers={"x-request-id": "b"})
    assert diff(legacy, candidate, headers=["X-Request-ID", "allow"]) == [
        Difference("header:x-request-id", "header_value", "a", "b", "breaking"),
        Difference("header:allow", "header_missing", "GET", None, "breaking"),
    ]


def test_default_headers_compare_what_clients_read_and_skip_per_request_ones() -> None:
    # Per-request headers (date, request id, length) differ on every call: comparing them
    # would bury real differences; the contract's headers must all be compared.
    base = {"content-type": "application/json", "retry-after": "5", "allow": "GET"}
    legacy = Response(
        200, {**base, "date": "Mon", "x-request-id": "a", "content-length": "2"}, b"{}"
    )
    same = Response(200, {**base, "date": "Tue", "x-request-id": "b", "content-length": "3"}, b"{}")
    assert diff(legacy, same) == []
    for name in DEFAULT_HEADERS:
        changed = Response(200, {**base, name: "other"}, b"{}")
        found = {d.path for d in diff(legacy, changed)}
        assert f"header:{name}" in found, name


# --- the realistic pair ---------------------------------------------------------------------

RULES_YAML = """\
volatile:
  - path: $.processing_time_ms
    check: duration_ms
"""
FLASK_CHAT = {"processing_time_ms": 3.1, "response": "hi", "session_id": "s"}


def fastapi_chat(processing_time_ms: float) -> dict[str, Any]:
    return {
        "response": "hi",
        "session_id": "s",
        "processing_time_ms": processing_time_ms,
        "timestamp": NOW,
        "tokens_used": 12,
    }


def test_the_chat_answers_differ_only_in_noise_and_additions(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    rules = load_rules(path)

    got = diff(response(FLASK_CHAT), response(fastapi_chat(4.7)), rules=rules, now=NOW)

    assert got == [
        Difference("$.processing_time_ms", "value", 3.1, 4.7, "noise", "volatile"),
        Difference("$.timestamp", "added", None, NOW, "additive"),
        Difference("$.tokens_used", "added", None, 12, "additive"),
    ]
    assert [d for d in got if is_unexpected(d)] == []
    assert summarize(got) == {
        "breaking": 0,
        "additive": 2,
        "noise": 1,
        "expected": 0,
        "ignored": 0,
    }


def test_a_negative_duration_fails_the_volatile_check() -> None:
    rules = Rules(volatile=(Volatile("$.processing_time_ms", "duration_ms"),))

    got = diff(response(FLASK_CHAT), response(fastapi_chat(-1)), rules=rules, now=NOW)

    assert got == [
        Difference(
            "$.processing_time_ms",
            "value",
            3.1,
            -1,
            "breaking",
            "volatile field failed its check: duration_ms must be a non-negative number, got -1",
        ),
        Difference("$.timestamp", "added", None, NOW, "additive"),
        Difference("$.tokens_used", "added", None, 12, "additive"),
    ]
    assert [d.path for d in got if is_unexpected(d)] == ["$.processing_time_ms"]


# --- noise ----------------------------------------------------------------------------------


def test_noisy_paths_are_where_two_legacy_answers_differ() -> None:
    first = response({"timestamp": 1.0, "version": "1", "history": [1]}, headers={"Vary": "Origin"})
    second = response({"timestamp": 2.0, "version": "1", "history": [1, 2]}, headers={})
    assert noisy_paths(first, second) == {"$.timestamp", "$.history[1]", "header:vary"}
    assert noisy_paths(first, first) == set()


def test_noise_is_reported_as_noise_not_dropped() -> None:
    legacy = response({"timestamp": 1.0, "meta": {"a": 1}, "version": "1"})
    candidate = response({"timestamp": 5.0, "meta": {"a": 2}, "version": "2"})
    # `$.meta` covers `$.meta.a`; `$.time` is not a prefix of `$.timestamp`.
    got = diff(legacy, candidate, noise={"$.timestamp", "$.meta"})
    assert got == [
        Difference("$.meta.a", "value", 1, 2, "noise", NOISE_REASON),
        Difference("$.timestamp", "value", 1.0, 5.0, "noise", NOISE_REASON),
        Difference("$.version", "value", "1", "2", "breaking"),
    ]
    assert diff(legacy, candidate, noise={"$.time", "$.met"}) == [
        Difference("$.meta.a", "value", 1, 2, "breaking"),
        Difference("$.timestamp", "value", 1.0, 5.0, "breaking"),
        Difference("$.version", "value", "1", "2", "breaking"),
    ]


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        # Noise explains another value or order where the legacy value varies per call...
        ({"m": {"a": 1}}, {"m": {"a": 2}}, ("$.m.a", "value", "noise")),
        ({"m": [1, 2]}, {"m": [2, 1]}, ("$.m", "order", "noise")),
        (b"text 1", b"text 2", ("$", "body", "noise")),
        # ...never a field dropped or added, a type changed: those a client trips on.
        ({"m": {"a": 1}}, {"m": {}}, ("$.m.a", "missing", "breaking")),
        ({"m": {"a": 1}}, {"m": {"a": 1, "b": 2}}, ("$.m.b", "added", "additive")),
        ({"m": [1]}, {"m": [1, 2]}, ("$.m[1]", "added", "breaking")),
        ({"m": {"a": 1}}, {"m": {"a": "1"}}, ("$.m.a", "type", "breaking")),
        ({"m": {"a": 1}}, {"m": 5}, ("$.m", "type", "breaking")),
    ],
    ids=[
        "value",
        "order",
        "body",
        "missing",
        "added-field",
        "added-element",
        "type-below",
        "type-at",
    ],
)
def test_noise_downgrades_only_values_and_order(
    legacy: Any, candidate: Any, expected: tuple[str, str, str]
) -> None:
    noise = {"$.m", "$"} if isinstance(legacy, bytes) else {"$.m"}
    got = diff(response(legacy), response(candidate), noise=noise)
    assert [(d.path, d.kind, d.severity) for d in got] == [expected]


@pytest.mark.parametrize(
    ("legacy", "candidate", "expected"),
    [
        ({"X-Trace": "1"}, {"X-Trace": "2"}, ("header:x-trace", "header_value", "noise")),
        ({"X-Trace": "1"}, {}, ("header:x-trace", "header_missing", "breaking")),
        ({}, {"X-Trace": "2"}, ("header:x-trace", "header_added", "additive")),
    ],
    ids=["value", "missing", "added"],
)
def test_noise_downgrades_only_header_values(
    legacy: dict[str, str], candidate: dict[str, str], expected: tuple[str, str, str]
) -> None:
    got = diff(
        response({}, headers=legacy),
        response({}, headers=candidate),
        headers=["x-trace"],
        noise={"header:x-trace"},
    )
    assert [(d.path, d.kind, d.severity) for d in got] == [expected]


def test_a_status_change_is_never_noise() -> None:
    got = diff(response({}, status=200), response({}, status=500), noise={"status"})
    assert [(d.path, d.severity) for d in got] == [("status", "breaking")]


def test_a_rule_decides_before_noise() -> None:
    rules = Rules(volatile=(Volatile("$.took", "duration_ms"),))
    got = diff(response({"took": 1}), response({"took": "1"}), rules=rules, noise={"$.took"})
    assert got == [
        Difference(
            "$.took",
            "type",
            1,
            "1",
            "breaking",
            "volatile field failed its check: duration_ms must be a non-negative number, got '1'",
        )
    ]


def test_summarize_counts_every_severity() -> None:
    diffs = [
        Difference("$.a", "value", 1, 2, "breaking"),
        Difference("$.b", "added", None, 2, "additive"),
        Difference("$.c", "added", None, 2, "additive"),
        Difference("$.d", "value", 1, 2, "ignored"),
    ]
    assert summarize(diffs) == {
        "breaking": 1,
        "additive": 2,
        "noise": 0,
        "expected": 0,
        "ignored": 1,
    }
    assert [is_unexpected(d) for d in diffs] == [True, False, False, False]
