"""The pure parts of the parity suite, as tables: corpus parsing and placeholders, putting
a run's ids back, the ABBA order, percentiles and the latency gate."""

from __future__ import annotations

import io

import pytest

from harness.diff import Reply
from parity_tests.cli import Progress
from parity_tests.corpus import (
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
from parity_tests.latency import Comparison, Spread, abba, gate, percentile
from parity_tests.runner import CaseResult, fresh_ids, put_back
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


def test_put_back_restores_placeholders_in_body_and_headers() -> None:
    reply = Reply(200, {"X-Request-ID": "t-ps-0123456789"}, b'{"s": "ps-0123456789", "n": 1}')
    restored = put_back(reply, {"session": "ps-0123456789", "tiny": "1"})
    assert restored == Reply(200, {"X-Request-ID": "t-{session}"}, b'{"s": "{session}", "n": 1}')


def test_abba_alternates_which_stack_goes_first() -> None:
    assert abba(4) == [
        ("flask", "fastapi"),
        ("fastapi", "flask"),
        ("flask", "fastapi"),
        ("fastapi", "flask"),
    ]


@pytest.mark.parametrize(
    ("samples", "fraction", "expected"),
    [([], 0.5, None), ([5.0], 0.95, 5.0), ([1, 2, 3, 4], 0.5, 2.5), ([10, 0, 5], 0.95, 9.5)],
)
def test_percentile_interpolates(samples: list[float], fraction: float, expected: float) -> None:
    assert percentile(samples, fraction) == expected


def test_the_gate_reads_the_overall_p50_ratio() -> None:
    comparison = Comparison.of([1.0, 2.0, 3.0], [3.0, 4.0, 100.0])
    assert comparison.fastapi == Spread(3, 4.0, pytest.approx(90.4))
    assert comparison.ratio == 2.0
    assert gate(comparison, None) is None
    assert gate(comparison, 2.0) is None
    assert gate(comparison, 1.5) == "FastAPI/Flask p50 ratio 2.00 is above the limit 1.5"
    assert gate(Comparison.of([], []), 1.5) == "no latency samples to compare"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_progress_rewrites_one_line_only_on_a_terminal(terminal: bool) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    progress = Progress(stream)
    cases = parse_corpus_file(
        "cases:\n  - {name: a, request: {path: /}}\n  - {name: b, request: {path: /}}", "x", "x"
    )
    for done, case in enumerate(cases, start=1):
        progress(done, 2, CaseResult(case, (), ("no answer",) if done == 1 else ()))
    if terminal:
        assert stream.getvalue() == "\r\x1b[2K[  1/2] x/a FAILED\r\x1b[2K[  2/2] x/b ok\n"
    else:
        assert stream.getvalue() == "[  1/2] x/a FAILED\n[  2/2] x/b ok\n"
