"""The parity corpus: case files parsed into steps, their errors, the shipped corpus, and the
placeholders filled with fresh ids per run."""

from __future__ import annotations

import pytest

from parity_tests.cases import (
    Case,
    CorpusError,
    Request,
    Step,
    fill,
    fill_value,
    id_names,
    load_corpus,
    parse_corpus_file,
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
        ("cases: []", "x.yaml: cases must be a non-empty list"),
        ("cases:\n  - {name: a, request: {path: /, method: FETCH}}", "cases[0] (a).request.method"),
        ("cases:\n  - {name: a, request: {path: /, json: 1, text: x}}", "at most one of json"),
        ("cases:\n  - {name: a, request: {path: /, base64: '@@'}}", "base64: not valid base64"),
        ("cases:\n  - {name: a, request: {path: /, chunked: true}}", "chunked: needs a body"),
        ("cases:\n  - {name: a, request: {path: /}, status: 999}", "(a).status: must be an HTTP"),
        ("cases:\n  - {name: a}", "needs exactly one of 'request' or 'steps'"),
        (
            "cases:\n  - {name: a, steps: [{request: {path: /}}], status: 200}",
            "(a).status: belongs to a step",
        ),
        (
            "cases:\n  - {name: a, request: {path: /, headers: {X: 1}}}",
            "headers.X: must be a string",
        ),
    ],
)
def test_corpus_errors_name_the_file_case_and_field(text: str, message: str) -> None:
    with pytest.raises(CorpusError) as caught:
        parse_corpus_file(text, "x.yaml", "x")
    assert str(caught.value).startswith("x.yaml: ")
    assert message in str(caught.value)


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
