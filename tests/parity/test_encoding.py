"""FastAPI gzips long answers (GZipMiddleware, minimum 1000 bytes); Flask never does. The
suite compares the decoded bodies, and two rules of the shipped rules file accept the
headers that say so: without them, the difference is reported."""

from __future__ import annotations

import json
from dataclasses import replace

from harness.diff import Rules
from parity_tests.cases import Case
from parity_tests.runner import CaseResult, Sender, run_case
from parity_tests.targets import Targets

from .conftest import pick

GZIP_CASES = ("encoding-gzip-long-answer", "encoding-gzip-long-answer-cors")


def _run(targets: Targets, cases: list[Case], rules: Rules) -> list[CaseResult]:
    with Sender(targets) as sender:
        return [run_case(case, sender, rules) for case in cases]


def _without(rules: Rules, path: str) -> Rules:
    kept = tuple(rule for rule in rules.expected if rule.path != path)
    assert len(kept) == len(rules.expected) - 1, f"no rule at {path}"
    return replace(rules, expected=kept)


ENCODING_HEADERS = ("header:content-encoding", "header:vary")


def _header_differences(result: CaseResult) -> dict[str, tuple[str, str]]:
    """The differences in the headers gzip sets (x-request-id differs too: volatile)."""
    return {
        d.path: (d.severity, d.kind) for _, d in result.differences if d.path in ENCODING_HEADERS
    }


def test_a_gzip_answer_has_parity_by_the_encoding_rules(
    shipped: Targets, corpus: list[Case], rules: Rules
) -> None:
    results = _run(shipped, pick(corpus, *GZIP_CASES), rules)
    for result in results:
        assert not result.failed, result.case.name
        (step,) = result.steps
        fastapi, flask = step.candidate.response, step.legacy.response
        assert fastapi is not None and flask is not None
        assert fastapi.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in flask.headers
        # What was compared is the decoded answer: JSON echoing the long message.
        assert len(json.loads(fastapi.body)["response"]) > 1500
    plain, cors = (_header_differences(result) for result in results)
    assert plain == {
        "header:content-encoding": ("expected", "header_added"),
        "header:vary": ("expected", "header_added"),
    }
    assert cors == {
        "header:content-encoding": ("expected", "header_added"),
        "header:vary": ("expected", "header_value"),  # Origin on both, Accept-Encoding added
    }


def test_without_the_content_encoding_rule_the_header_is_reported(
    shipped: Targets, corpus: list[Case], rules: Rules
) -> None:
    (result,) = _run(
        shipped, pick(corpus, GZIP_CASES[0]), _without(rules, "header:content-encoding")
    )
    assert _header_differences(result)["header:content-encoding"] == ("additive", "header_added")


def test_without_the_vary_rule_the_cors_answer_breaks_parity(
    shipped: Targets, corpus: list[Case], rules: Rules
) -> None:
    (result,) = _run(shipped, pick(corpus, GZIP_CASES[1]), _without(rules, "header:vary"))
    assert result.failed
    assert [(d.path, d.kind) for _, d in result.unexpected] == [("header:vary", "header_value")]


def test_a_short_answer_is_not_compressed(
    shipped: Targets, corpus: list[Case], rules: Rules
) -> None:
    (result,) = _run(shipped, pick(corpus, "encoding-gzip-short-answer"), rules)
    (step,) = result.steps
    assert step.candidate.response is not None
    assert "content-encoding" not in step.candidate.response.headers
    assert _header_differences(result) == {}
