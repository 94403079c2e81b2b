"""The pure parts of the parity suite, as tables: putting a run's ids back, the ABBA order,
the latency gate, and the reports (the terminal summary, JSON, JUnit and the HTML page a
person reads first)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
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
from parity_tests.latency import Comparison, Spread, abba, gate
from parity_tests.report import SLOWEST, summary, to_html, to_json, to_junit, verdict, write
from parity_tests.runner import (
    CaseResult,
    Options,
    Outcome,
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
    response = Response(200, {"X-Request-ID": "t-ps-0123456789"}, b'{"s": "ps-0123456789", "n": 1}')
    restored = put_back(response, {"session": "ps-0123456789", "tiny": "1"})
    assert restored == Response(200, {"X-Request-ID": "t-{session}"}, b'{"s": "{session}", "n": 1}')


def test_abba_alternates_which_stack_goes_first() -> None:
    assert abba(4) == [
        ("flask", "fastapi"),
        ("fastapi", "flask"),
        ("flask", "fastapi"),
        ("fastapi", "flask"),
    ]


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
    # Override off: the gateway's own choice (Flask) answers both.
    always_flask = httpx.MockTransport(
        lambda r: httpx.Response(200, headers={OVERRIDE_HEADER: "flask"})
    )
    with pytest.raises(SetupError) as caught:
        check_reachable(GATEWAY, transport=always_flask)
    assert str(caught.value) == (
        "http://gateway.test answered X-Dualstack-Backend: fastapi with X-Dualstack-Backend: "
        "flask; is the gateway's override header off (GATEWAY_OVERRIDE_HEADER), its token not "
        "the one given (--override-token), or its backend header hidden?"
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
        Outcome("flask", Response(200, JSON_HEADERS, body)),
        Outcome("fastapi", Response(200, JSON_HEADERS, body)),
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


# --- report.html: the page a person reads first -----------------------------------------------

BREAKING = Difference("$.error", "value", "Message is required", "Message is missing", "breaking")
ADDITIVE = Difference("$.timestamp", "added", None, 1.5, "additive", "new in the candidate")
EXPECTED = Difference("$.tokens_used", "added", None, 36, "expected", "tokens are reported")
NOISE = Difference("header:x-request-id", "header_value", "a", "b", "noise", "volatile")
NOISY = Difference("$.response", "value", "a", "b", "noise", NOISE_REASON)
IGNORED = Difference("$.debug", "value", 1, 2, "ignored", "not compared")


def _result(
    name: str,
    *differences: Difference,
    problems: tuple[str, ...] = (),
    samples: dict[Stack, tuple[float, ...]] | None = None,
) -> CaseResult:
    case = _case(f"cases:\n  - {{name: {name}, request: {{path: /x}}}}")
    return CaseResult(case, (_step(*differences),), problems, samples or {})


def _run(*results: CaseResult) -> RunReport:
    return RunReport("synthetic", Options(), results, (), 0.5)


@pytest.mark.parametrize(
    ("differences", "problems", "expected"),
    [
        ((), (), "passed — identical answers"),
        (
            (ADDITIVE, EXPECTED, ADDITIVE, EXPECTED),
            (),
            "passed — 4 accepted differences (2 additive, 2 expected)",
        ),
        ((NOISE,), (), "passed — 1 accepted difference (1 noise)"),
        ((NOISY, IGNORED), (), "passed — 2 accepted differences (1 ignored, 1 noisy)"),
        ((BREAKING,), (), "failed — 1 unexpected difference"),
        (
            (BREAKING, EXPECTED, BREAKING),
            ("step 1: candidate run: no answer from fastapi: ReadTimeout",),
            "failed — 2 unexpected differences, 1 problem (and 1 accepted difference: 1 expected)",
        ),
        ((), ("step 1: the legacy answer is 500, the case expects 200",), "failed — 1 problem"),
    ],
)
def test_a_case_verdict_says_what_failed_or_what_was_accepted(
    differences: tuple[Difference, ...], problems: tuple[str, ...], expected: str
) -> None:
    assert verdict(_result("a", *differences, problems=problems)) == expected


def _sections(page: str) -> list[tuple[str, str, bool]]:
    """The case blocks in page order: (class, id, open)."""
    found = re.findall(r'<details class="case (\w+)" id="([^"]+)"( open)?>', page)
    return [(kind, anchor, bool(opened)) for kind, anchor, opened in found]


def test_the_page_opens_with_the_verdict_then_the_failing_cases() -> None:
    report = _run(
        _result("a-accepted", ADDITIVE, EXPECTED, NOISE),
        _result("b-failing", BREAKING, EXPECTED),
        _result("c-same"),
        _result("d-broken", problems=("step 1: candidate run: no answer from fastapi",)),
    )
    page = to_html(report)
    verdict_at = page.index('<header class="verdict fail">')
    failing = re.search(r'<ol class="failing">(.*?)</ol>', page, re.DOTALL)
    assert failing is not None
    # Verdict, then the failing cases, before any chart or case block.
    assert verdict_at < failing.start() < page.index("<svg") < page.index("<details")
    header = page[verdict_at : page.index("</header>")]
    assert '<span class="word">FAIL</span>' in header
    assert "4 cases: 2 passed, 2 failed." in header
    links = re.findall(r'<a href="#([^"]+)">', failing.group(1))
    assert links == ["x/b-failing", "x/d-broken"]
    assert "value at $.error: &#34;Message is required&#34; → &#34;Message is missing&#34;" in (
        failing.group(1)
    )
    assert "no answer from fastapi" in failing.group(1)
    # The details: failures first and open, accepted differences closed; none for a case
    # whose answers are the same.
    assert _sections(page) == [
        ("failed", "x/b-failing", True),
        ("failed", "x/d-broken", True),
        ("accepted", "x/a-accepted", False),
    ]
    assert 'id="row-x/c-same"' in page and 'href="#x/c-same"' not in page


def test_a_passing_run_says_so_first() -> None:
    page = to_html(_run(_result("a", ADDITIVE), _result("b")))
    header = page[page.index("<header") : page.index("</header>")]
    assert 'class="verdict pass"' in header and '<span class="word">PASS</span>' in header
    assert "2 cases: 2 passed, 0 failed." in header
    assert "1 passed case has accepted differences only" in header
    assert '<ol class="failing">' not in page
    assert page.index("No failing case") < page.index("<svg")


def test_a_case_with_accepted_differences_only_does_not_read_like_a_failure() -> None:
    page = to_html(
        _run(_result("ok", ADDITIVE, ADDITIVE, EXPECTED, EXPECTED), _result("bad", BREAKING))
    )
    blocks = dict(
        (anchor, block)
        for anchor, block in re.findall(
            r'<details class="case \w+" id="([^"]+)".*?<summary>(.*?)</summary>', page, re.DOTALL
        )
    )
    accepted, failed = blocks["x/ok"], blocks["x/bad"]
    assert '<span class="pass-word">passed</span>' in accepted
    assert "— 4 accepted differences (2 additive, 2 expected)" in accepted
    assert "fail" not in accepted
    assert '<span class="fail-word">failed</span>' in failed
    assert "— 1 unexpected difference" in failed
    # The table of all cases says the same.
    rows = dict(re.findall(r'<tr id="row-([^"]+)"[^>]*><td>.*?</td><td>(.*?)</td>', page))
    assert rows == {"x/ok": "passed", "x/bad": '<span class="fail-word">failed</span>'}


def _heights(page: str) -> list[str]:
    charts = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    return [ET.fromstring(chart).get("height", "") for chart in charts]


def test_the_latency_charts_keep_their_size_however_many_cases_ran() -> None:
    def page(count: int) -> str:
        results = [
            _result(f"case-{n}", samples={"flask": (1.0 + n, 2.0 + n), "fastapi": (0.5 + n,)})
            for n in range(count)
        ]
        return to_html(_run(*results))

    ten, many = page(10), page(140)
    assert len(_heights(ten)) == 2  # every stack's distribution, the slowest cases
    assert _heights(ten) == _heights(many)
    slowest = ET.fromstring(re.findall(r"<svg.*?</svg>", many, re.DOTALL)[1])
    links = [a.get("href") for a in slowest.iter("{http://www.w3.org/2000/svg}a")]
    assert links == [f"#row-x/case-{n}" for n in range(139, 139 - SLOWEST, -1)]


HOSTILE = '<script>alert("&")</script>'


def test_names_answers_and_differences_are_escaped_in_the_page() -> None:
    body = json.dumps({"error": HOSTILE}).encode()
    hostile = Difference(f"$.{HOSTILE}", "value", HOSTILE, "x", "breaking", HOSTILE)
    result = _result(
        "a", hostile, problems=(HOSTILE,), samples={"flask": (1.0,), "fastapi": (2.0,)}
    )
    case = dataclasses.replace(result.case, name=HOSTILE, description=HOSTILE)
    step = dataclasses.replace(
        result.steps[0], legacy=Outcome("flask", Response(200, JSON_HEADERS, body))
    )
    report = _run(dataclasses.replace(result, case=case, steps=(step,)))
    page = to_html(report)
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(&#34;&amp;&#34;)&lt;/script&gt;") >= 6
    assert 'id="x/&lt;script&gt;alert(&#34;&amp;&#34;)&lt;/script&gt;"' in page
    for chart in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        ET.fromstring(chart)  # well-formed: no text broke out
