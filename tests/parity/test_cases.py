"""The parity corpus: case files parsed into steps, their errors, the shipped corpus, the
placeholders filled with fresh ids per run, and `-k` expressions selecting cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity_tests.cases import (
    Case,
    CorpusError,
    KeywordError,
    Request,
    Step,
    fill,
    fill_value,
    id_names,
    load_corpus,
    parse_corpus_file,
    parse_keywords,
    select,
)
from parity_tests.runner import (
    fresh_ids,
)
from shared.contract import is_identifier


def test_a_case_parses_into_steps_with_defaults() -> None:
    text = """
cases:
  - name: one
    request: {path: /api/v1/chat, json: {message: "hi {session}"}}
    status: 200
  - name: two
    description: a conversation
    steps:
      - request: {path: /health, headers: {X-Request-ID: "r-{user}"}}
      - stack: fastapi
        request: {method: delete, path: "/s/{session2}", base64: AAE=}
        capture: {sid: $.session_id}
"""
    assert parse_corpus_file(text, "x.yaml", "x") == [
        Case(
            "one",
            "x",
            (
                Step(
                    Request("POST", "/api/v1/chat", (), {"message": "hi {session}"}, "json"),
                    None,
                    200,
                ),
            ),
        ),
        Case(
            "two",
            "x",
            (
                Step(Request("GET", "/health", (("X-Request-ID", "r-{user}"),))),
                Step(
                    Request("DELETE", "/s/{session2}", (), "AAE=", "base64"),
                    "fastapi",
                    capture=(("sid", "$.session_id"),),
                ),
            ),
            "a conversation",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The file.
        ("", "must be a mapping with one key, 'cases', not None"),
        ("- {name: a}", "must be a mapping with one key, 'cases', not [{'name': 'a'}]"),
        ("{}", "must be a mapping with one key, 'cases': missing 'cases'"),
        (
            "cases: [{name: a, request: {path: /}}]\ncase: []",
            "must be a mapping with one key, 'cases': unknown field 'case' (known: cases)",
        ),
        ("cases: []", "cases: must be a non-empty list"),
        ("cases: {name: a}", "cases: must be a list, not {'name': 'a'}"),
        ("cases: [a]", "cases[0]: must be a mapping, not 'a'"),
        # A case.
        (
            "cases:\n  - {name: a, request: {path: /}, descripton: x}",
            "cases[0] (a): unknown field 'descripton' "
            "(known: name, description, steps, request, stack, status, capture)",
        ),
        ("cases:\n  - {request: {path: /}}", "cases[0]: missing 'name'"),
        ("cases:\n  - {name: 'a b', request: {path: /}}", "cases[0].name: 'a b' is not"),
        ("cases:\n  - {name: 7, request: {path: /}}", "cases[0].name: must be a string, not 7"),
        ("cases:\n  - {name: a, description: 5, request: {path: /}}", "(a).description: must be"),
        ("cases:\n  - {name: a}", "cases[0] (a): needs exactly one of 'request' or 'steps'"),
        (
            "cases:\n  - {name: a, request: {path: /}, steps: [{request: {path: /}}]}",
            "cases[0] (a): needs exactly one of 'request' or 'steps'",
        ),
        (
            "cases:\n  - {name: a, steps: [{request: {path: /}}], status: 200}",
            "cases[0] (a).status: belongs to a step when the case has steps",
        ),
        ("cases:\n  - {name: a, steps: []}", "cases[0] (a).steps: must be a non-empty list"),
        # A step.
        (
            "cases:\n  - {name: a, steps: [{request: {path: /}}, {request: {path: /}, statsu: 1}]}",
            "cases[0] (a).steps[1]: unknown field 'statsu' "
            "(known: request, stack, status, capture)",
        ),
        (
            "cases:\n  - {name: a, steps: [{reqest: {path: /}}]}",
            "cases[0] (a).steps[0]: unknown field 'reqest' "
            "(known: request, stack, status, capture)",
        ),
        (
            "cases:\n  - {name: a, steps: [{stack: flask}]}",
            "cases[0] (a).steps[0]: missing 'request'",
        ),
        (
            "cases:\n  - {name: a, request: {path: /}, status: 999}",
            "cases[0] (a).status: must be an HTTP status, not 999",
        ),
        (
            "cases:\n  - {name: a, request: {path: /}, status: '200'}",
            "cases[0] (a).status: must be an integer, not '200'",
        ),
        (
            "cases:\n  - {name: a, steps: [{request: {path: /}, stack: django}]}",
            "cases[0] (a).steps[0].stack: must be flask or fastapi, not 'django'",
        ),
        # A request.
        (
            "cases:\n  - {name: a, request: {path: /, heders: {X: y}}}",
            "cases[0] (a).request: unknown field 'heders' "
            "(known: method, path, headers, json, text, base64, chunked)",
        ),
        (
            "cases:\n  - {name: a, steps: [{request: {path: /, json_: 1}}]}",
            "cases[0] (a).steps[0].request: unknown field 'json_'",
        ),
        ("cases:\n  - {name: a, request: {method: GET}}", "cases[0] (a).request: missing 'path'"),
        ("cases:\n  - {name: a, request: [/]}", "cases[0] (a).request: must be a mapping, not"),
        ("cases:\n  - {name: a, request: {path: x}}", "(a).request.path: must start with '/'"),
        (
            "cases:\n  - {name: a, request: {path: /, method: FETCH}}",
            "cases[0] (a).request.method: unknown method 'FETCH'",
        ),
        (
            "cases:\n  - {name: a, request: {path: /, json: 1, text: x}}",
            "cases[0] (a).request: at most one of json, text, base64 (got json, text)",
        ),
        ("cases:\n  - {name: a, request: {path: /, base64: '@@'}}", "base64: not valid base64"),
        ("cases:\n  - {name: a, request: {path: /, json: .nan}}", "json: not JSON-serializable"),
        ("cases:\n  - {name: a, request: {path: /, text: null}}", "text: must be a string"),
        ("cases:\n  - {name: a, request: {path: /, chunked: true}}", "chunked: needs a body"),
        (
            "cases:\n  - {name: a, request: {path: /, json: 1, chunked: 'yes'}}",
            "cases[0] (a).request.chunked: must be true or false, not 'yes'",
        ),
        (
            "cases:\n  - {name: a, request: {path: /, headers: {X: 1}}}",
            "cases[0] (a).request.headers.X: must be a string, not 1",
        ),
        (
            "cases:\n  - {name: a, request: {path: /, headers: [X]}}",
            "cases[0] (a).request.headers: must be a mapping, not ['X']",
        ),
        # A capture.
        (
            "cases:\n  - {name: a, request: {path: /}, captrue: {s: $.x}}",
            "cases[0] (a): unknown field 'captrue'",
        ),
        (
            "cases:\n  - {name: a, request: {path: /}, capture: {Sid: $.x}}",
            "cases[0] (a).capture: key 'Sid': must be a lower-case identifier",
        ),
        (
            "cases:\n  - {name: a, request: {path: /}, capture: {sid: session_id}}",
            "cases[0] (a).capture.sid: bad path 'session_id'",
        ),
        (
            "cases:\n  - {name: a, request: {path: /}, capture: {sid: 5}}",
            "cases[0] (a).capture.sid: must be a string, not 5",
        ),
    ],
)
def test_corpus_errors_are_one_line_naming_the_file_case_and_field(text: str, message: str) -> None:
    with pytest.raises(CorpusError) as caught:
        parse_corpus_file(text, "x.yaml", "x")
    line = str(caught.value)
    assert line.startswith("x.yaml: ")
    assert "\n" not in line
    assert message in line


def test_the_first_case_error_names_the_case_it_is_in() -> None:
    text = "cases:\n  - {name: a, request: {path: /}}\n  - {name: b, request: {path: /, x: 1}}"
    with pytest.raises(CorpusError) as caught:
        parse_corpus_file(text, "x.yaml", "x")
    assert str(caught.value).startswith("x.yaml: cases[1] (b).request: unknown field 'x' ")


def test_load_corpus_names_the_file_of_a_bad_case(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("cases:\n  - {name: a, request: {path: /}}\n")
    (tmp_path / "b.yaml").write_text("cases:\n  - {name: b, request: {path: /, heders: {}}}\n")
    with pytest.raises(CorpusError) as caught:
        load_corpus(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'}: cases[0] (b).request: unknown field 'heders' "
        "(known: method, path, headers, json, text, base64, chunked)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases: [\n", "x.yaml: invalid YAML at line 2, column 1: "),
        ("cases:\n  - {name: a\n", "x.yaml: invalid YAML at line 3, column 1: "),
    ],
)
def test_invalid_yaml_is_one_line_naming_where(text: str, message: str) -> None:
    with pytest.raises(CorpusError) as caught:
        parse_corpus_file(text, "x.yaml", "x")
    assert str(caught.value).startswith(message)


def test_a_json_null_body_is_a_body_and_the_method_is_upper_cased() -> None:
    text = "cases:\n  - {name: a, request: {method: put, path: /, json: null, chunked: true}}"
    assert parse_corpus_file(text, "x.yaml", "x")[0].steps == (
        Step(Request("PUT", "/", (), None, "json", chunked=True)),
    )


def test_the_shipped_corpus_is_big_enough_and_covers_every_file() -> None:
    cases = load_corpus()
    assert len(cases) >= 60
    assert {case.file for case in cases} >= {
        "chat", "content", "cors", "errors", "faults", "health", "methods", "sessions",
        "unicode", "validation",
    }  # fmt: skip
    # Conversations that switch stacks and read the session back.
    switching = [c for c in cases if len({s.stack for s in c.steps}) > 2]
    assert switching


def test_fill_expands_repeats_and_known_names_only() -> None:
    assert fill("{repeat:3:ab}-{session}-{other}", {"session": "S"}) == "ababab-S-{other}"
    assert fill_value({"k{user}": ["{user}", 1, None]}, {"user": "U"}) == {"kU": ["U", 1, None]}


def test_each_placeholder_gets_a_fresh_valid_id_per_run() -> None:
    text = "cases:\n  - {name: a, request: {path: '/{session2}', json: ['a{session}', '{user}']}}"
    case = parse_corpus_file(text, "x.yaml", "x")[0]
    assert id_names(case) == {"session", "session2", "user"}
    first, second = fresh_ids(case), fresh_ids(case)
    assert set(first) == {"session", "session2", "user"}
    assert not set(first.values()) & set(second.values())
    assert all(is_identifier(value) for value in first.values())


KEYWORD_IDS = [
    "chat/chat-hello",
    "chat/chat-fault",
    "cors/cors-preflight",
    "cors/cors-simple",
    "unicode/Unicode-Emoji",
    "errors/not-found",
    "faults/fault-hang",
]


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        # A single word is a substring of the id (file/name), as before.
        ("chat", ["chat/chat-hello", "chat/chat-fault"]),
        ("chat/chat-hello", ["chat/chat-hello"]),
        ("t/chat-f", ["chat/chat-fault"]),
        ("nothing-like-it", []),
        # Ignoring case, on both sides.
        ("CHAT-Hello", ["chat/chat-hello"]),
        ("unicode-emoji", ["unicode/Unicode-Emoji"]),
        # Operators, alone and together.
        ("not hang", [i for i in KEYWORD_IDS if i != "faults/fault-hang"]),
        ("chat and not fault", ["chat/chat-hello"]),
        ("hello or simple", ["chat/chat-hello", "cors/cors-simple"]),
        ("not not hang", ["faults/fault-hang"]),
        # `not` binds tighter than `and`: (not chat) and fault, not "not (chat and fault)".
        ("not chat and fault", ["faults/fault-hang"]),
        # `and` binds tighter than `or`: chat or (cors and simple).
        ("chat or cors and simple", ["chat/chat-hello", "chat/chat-fault", "cors/cors-simple"]),
        ("cors and simple or chat", ["chat/chat-hello", "chat/chat-fault", "cors/cors-simple"]),
        # Parentheses override both.
        ("(chat or cors) and simple", ["cors/cors-simple"]),
        ("not (chat or cors)", ["unicode/Unicode-Emoji", "errors/not-found", "faults/fault-hang"]),
        ("(cors or unicode) and not preflight", ["cors/cors-simple", "unicode/Unicode-Emoji"]),
        ("((hang))", ["faults/fault-hang"]),
        # Operators are whole words: `not-found` is a word; spaces are free around parentheses.
        ("not-found", ["errors/not-found"]),
        ("  ( not-found or hang )  ", ["errors/not-found", "faults/fault-hang"]),
    ],
)
def test_a_keyword_expression_selects_as_pytest_k_does(
    expression: str, selected: list[str]
) -> None:
    keywords = parse_keywords(expression)
    assert [case_id for case_id in KEYWORD_IDS if keywords(case_id)] == selected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("and", "expected a word, 'not' or '(' at column 1, got 'and'"),
        ("not", "expected a word, 'not' or '(' at column 4, got the end"),
        ("chat and", "expected a word, 'not' or '(' at column 9, got the end"),
        ("chat or or cors", "expected a word, 'not' or '(' at column 9, got 'or'"),
        ("(a", "expected ')' at column 3, got the end"),
        ("(a or (b)", "expected ')' at column 10, got the end"),
        ("()", "expected a word, 'not' or '(' at column 2, got ')'"),
        ("a)", "expected 'and', 'or' or the end at column 2, got ')'"),
        ("a b", "expected 'and', 'or' or the end at column 3, got 'b'"),
        ("chat*", "expected 'and', 'or' or the end at column 5, got '*'"),
        ("'chat'", "expected a word, 'not' or '(' at column 1, got \"'\""),
        # As in pytest, operators are lower-case: NOT is a word, and a second word is an error.
        ("NOT hang", "expected 'and', 'or' or the end at column 5, got 'hang'"),
        ("(" * 5000 + "a" + ")" * 5000, "nested too deeply"),
    ],
)
def test_a_malformed_keyword_expression_is_one_line_saying_where(
    expression: str, message: str
) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keywords(expression)
    assert str(caught.value) == message


def test_select_keeps_corpus_order_and_joins_several_expressions_by_or() -> None:
    cases = [Case(name, file, ()) for file, name in (i.split("/") for i in KEYWORD_IDS)]
    assert select(cases, []) == cases
    assert [c.id for c in select(cases, ["hang", "chat and not fault"])] == [
        "chat/chat-hello",
        "faults/fault-hang",
    ]
    with pytest.raises(KeywordError):
        select(cases, ["chat", "chat chat"])
