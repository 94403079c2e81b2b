"""The pure parts of the parity suite, as tables: putting
a run's ids back, the ABBA order, percentiles and the latency gate."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness.diff import (
    NOISE_REASON,
    SEVERITIES,
    Difference,
    Response,
    Rules,
    RuleUsage,
    Volatile,
    diff,
)
from parity_tests.cases import (
    Case,
    Stack,
    parse_corpus_file,
)
from parity_tests.cli import Progress
from parity_tests.latency import Comparison, Spread, abba, gate, percentile
from parity_tests.report import summary, to_json, to_junit, write
from parity_tests.runner import (
    Answer,
    CaseResult,
    Options,
    RunReport,
    StepResult,
    note_present,
    put_back,
    run,
)
from parity_tests.targets import (
    OVERRIDE_HEADER,
    SetupError,
    check_reachable,
    live,
    through_gateway,
)


def test_put_back_restores_placeholders_in_body_and_headers() -> None:
    reply = Response(200, {"X-Request-ID": "t-ps-0123456789"}, b'{"s": "ps-0123456789", "n": 1}')
    restored = put_back(reply, {"session": "ps-0123456789", "tiny": "1"})
    assert restored == Response(200, {"X-Request-ID": "t-{session}"}, b'{"s": "{session}", "n": 1}')


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


# --- the review's fixes, on synthetic answers and reports ------------------------------------


NOW = 1_750_000_000.0
JSON_HEADERS = {"Content-Type": "application/json"}


def _case(text: str = "cases:\n  - {name: a, request: {path: /x}}") -> Case:
    return parse_corpus_file(text, "x.yaml", "x")[0]


def _recording(
    seen: list[tuple[str, str, str]], backend: Callable[[str], str | None] = lambda host: None
) -> httpx.MockTransport:
    """Answers every request with `{}`, its X-Dualstack-Backend `backend(host)` when not
    None, and records (host, method, path) in `seen`."""

    def handle(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        seen.append((host, request.method, request.url.path))
        headers = {"Content-Type": "application/json"}
        if (said := backend(host)) is not None:
            headers[OVERRIDE_HEADER] = said
        return httpx.Response(200, headers=headers, content=b"{}")

    return httpx.MockTransport(handle)


GATEWAY = through_gateway("http://gateway.test")
TWO = live("http://flask.test", "http://fastapi.test")


def test_the_reachability_check_requires_the_stack_asked_for_through_a_gateway() -> None:
    def asked(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={OVERRIDE_HEADER: request.headers[OVERRIDE_HEADER]})

    check_reachable(GATEWAY, transport=httpx.MockTransport(asked))
    # Override disabled: the gateway's own choice (Flask) answers both.
    always_flask = httpx.MockTransport(
        lambda r: httpx.Response(200, headers={OVERRIDE_HEADER: "flask"})
    )
    with pytest.raises(SetupError) as caught:
        check_reachable(GATEWAY, transport=always_flask)
    assert str(caught.value) == (
        "http://gateway.test answered X-Dualstack-Backend: fastapi with X-Dualstack-Backend: "
        "flask; is the gateway's override header disabled or its backend header hidden?"
    )
    # Backend header hidden: nothing says which stack answered.
    hidden = httpx.MockTransport(lambda r: httpx.Response(200))
    with pytest.raises(SetupError, match="with no X-Dualstack-Backend;"):
        check_reachable(GATEWAY, transport=hidden)
    # Two live servers are not asked for a stack: any answer will do.
    check_reachable(TWO, transport=hidden)


def test_an_answer_from_the_other_stack_is_a_problem() -> None:
    seen: list[tuple[str, str, str]] = []
    transport = _recording(seen, backend=lambda host: "flask")
    report = run([_case()], GATEWAY, Rules(), transport=transport)
    (result,) = report.results
    assert result.problems == (
        "step 1: candidate run: asked fastapi, answered by 'flask' (X-Dualstack-Backend)",
    )
    assert report.exit_code == 1
    # Answers from the stack asked for (or saying nothing) are fine.
    same = _recording([], backend=lambda host: host.split(".")[0])
    assert run([_case()], TWO, Rules(), transport=same).exit_code == 0


@pytest.mark.parametrize("repeat", [1, 2])
def test_each_stack_is_warmed_up_untimed_before_the_first_case(repeat: int) -> None:
    seen: list[tuple[str, str, str]] = []
    report = run([_case()], TWO, Rules(), Options(repeat=repeat), transport=_recording(seen))
    health = [("flask.test", "GET", "/health"), ("fastapi.test", "GET", "/health")]
    rounds = [("flask.test", "GET", "/x"), ("fastapi.test", "GET", "/x")]
    # Measuring in earnest, the first case once per stack, untimed: the stacks' own
    # upstream calls warm up too.
    warm_case = rounds if repeat > 1 else []
    assert seen[: 2 + len(warm_case)] == health + warm_case
    assert len(seen) == 2 + len(warm_case) + 2 * repeat
    (result,) = report.results
    assert {stack: len(samples) for stack, samples in result.samples.items()} == {
        "flask": repeat,
        "fastapi": repeat,
    }


def test_a_volatile_rule_is_used_when_its_field_is_present_even_if_equal() -> None:
    ttl = Volatile("$.ttl", "timestamp", max_age_seconds=90000)
    rid = Volatile("header:x-request-id", "id")
    rules = Rules(ignore=("$.skip",), volatile=(ttl, rid, Volatile("$.skip", "number")))
    usage = RuleUsage()
    body = json.dumps({"ttl": NOW + 86400, "skip": 1}).encode()
    same = Response(200, {"X-Request-ID": "abc"}, body)
    # Two answers written in the same second: nothing differs, yet the rules were needed.
    assert diff(same, same, rules=rules, usage=usage) == []
    note_present(rules, same, usage, now=NOW)
    assert (usage.count(ttl), usage.count(rid)) == (1, 1)
    # A field failing its check, or an ignored one, does not make its rule needed.
    note_present(
        rules, Response(200, {"X-Request-ID": "not an id!"}, b'{"ttl": "x"}'), usage, now=NOW
    )
    assert (usage.count(ttl), usage.count(rid)) == (1, 1)
    assert usage.stale(rules) == ["ignore $.skip", "volatile $.skip (number)"]


def test_unexpected_differences_are_what_the_diff_engine_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    noise = Difference("$.a", "value", 1, 2, "noise")
    result = CaseResult(_case(), (_step(noise),))
    assert result.unexpected == []
    # One definition of "unexpected": the runner asks harness.diff, it does not repeat it.
    monkeypatch.setattr("parity_tests.runner.is_unexpected", lambda d: d.severity == "noise")
    assert result.unexpected == [(1, noise)]


def _step(*differences: Difference, body: bytes = b"{}") -> StepResult:
    return StepResult(
        1,
        "GET /x",
        Answer("flask", Response(200, JSON_HEADERS, body)),
        Answer("fastapi", Response(200, JSON_HEADERS, body)),
        differences,
    )


def _report(
    *steps: StepResult,
    options: Options | None = None,
    samples: dict[Stack, tuple[float, ...]] | None = None,
    stale: tuple[str, ...] | None = (),
) -> RunReport:
    result = CaseResult(_case(), steps, (), samples or {})
    return RunReport("synthetic", options or Options(), (result,), stale, 0.5)


def test_reports_survive_lone_surrogates(tmp_path: Path) -> None:
    lone = Difference("$.text", "value", "ok", "\ud800", "breaking")
    report = _report(_step(lone, body=b'{"text": "\\ud800"}'))
    text = summary(report)
    text.encode("utf-8")  # printable on any UTF-8 terminal
    assert '$.text: "ok" -> "\\ud800"' in text
    written = write(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    differences = data["cases"][0]["steps"][0]["differences"]
    assert [d["candidate"] for d in differences] == ["\ud800"]  # the value itself, escaped
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and "\\ud800" in ET.tostring(suite, encoding="unicode")
    assert "\\ud800" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(written) == 3


def test_junit_has_a_latency_gate_testcase_failing_with_the_gate() -> None:
    samples: dict[Stack, tuple[float, ...]] = {"flask": (1.0, 1.0), "fastapi": (5.0, 5.0)}
    failing = _report(_step(), options=Options(max_latency_ratio=2.0), samples=samples)
    suite = to_junit(failing).getroot().find("testsuite")
    assert suite is not None
    gate_case = suite.find("testcase[@name='latency-gate']")
    assert gate_case is not None and gate_case.get("classname") == "parity.latency"
    failure = gate_case.find("failure")
    assert failure is not None
    assert failure.get("message") == "FastAPI/Flask p50 ratio 5.00 is above the limit 2"
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    holding = to_junit(
        _report(_step(), options=Options(max_latency_ratio=9.0), samples=samples)
    ).getroot()
    gate_case = holding.find("testsuite/testcase[@name='latency-gate']")
    assert gate_case is not None and gate_case.find("failure") is None
    # No gate asked for: no gate testcase.
    ungated = to_junit(_report(_step(), samples=samples)).getroot()
    assert ungated.find("testsuite/testcase[@name='latency-gate']") is None


def test_noise_check_hits_are_counted_apart_from_volatile_noise() -> None:
    volatile = Difference("$.t", "value", 1, 2, "noise", "volatile")
    measured = Difference("$.r", "value", "a", "b", "noise", NOISE_REASON)
    report = _report(_step(volatile, measured), options=Options(noise_check=True))
    severities = to_json(report)["summary"]["severities"]
    assert severities == {
        "breaking": 0,
        "additive": 0,
        "noise": 1,
        "expected": 0,
        "ignored": 0,
        "noisy": 1,
    }
    lines = summary(report).splitlines()
    header = next(line for line in lines if line.startswith("file"))
    assert header.split() == ["file", "cases", "failed", *SEVERITIES, "noisy"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "1", "0", "0", "0", "1", "0", "0", "1"]


def test_stale_rules_of_a_subset_run_are_not_judged() -> None:
    subset = _report(_step(), stale=None)
    assert "stale rules: (subset run: not judged)" in summary(subset).splitlines()
    assert to_json(subset)["summary"]["stale_rules"] is None
    assert to_json(subset)["summary"]["stale_rules_judged"] is False
    full = _report(_step(), stale=("ignore $.x",))
    assert "stale rules: ignore $.x" in summary(full).splitlines()
