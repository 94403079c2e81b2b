"""`python -m load_test gate`: the pure parts (figures from batches, the idle work left
out, verdicts at their margins, the baseline file, ratios, the reports) without valgrind,
and one run against real servers under callgrind proving that a slower gateway fails.

`slowed_fastapi()` is the slower build: FastAPI inside `Burn`, a pure ASGI middleware that
spends a fixed amount of work on every HTTP request. The gate's servers inherit the
environment, so `GATEWAY_FASTAPI_APP=tests.load_test.test_gate:slowed_fastapi()` gives it
to the gateway (and only to the gateway: FastAPI alone is started by its own import
string)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.gateway.apps import load_app
from load_test import overhead
from load_test.__main__ import main
from load_test.gate import (
    BASELINE,
    MARGINS,
    OWN,
    SCENARIOS,
    SPLIT,
    Baseline,
    BaselineError,
    Batch,
    Idle,
    Plan,
    Report,
    Row,
    compare,
    expand,
    figures,
    load_baseline,
    mismatch,
    own_costs,
    ratios,
    render_html,
    summary,
    table,
    to_junit,
    updated,
)

BURN_LOOPS = 60
"""Loop turns `Burn` spends per request: some 20 000 instructions on CPython 3.11 (500
turns counted 174 000), 2 % of a `/health` request through the gateway: within the default
3 %, past the 1 % the gateway's `/health` paths have (`MARGINS`)."""


class Burn:
    """Pure ASGI middleware: `loops` turns of a small pure-Python loop per HTTP request."""

    def __init__(self, app: Any, loops: int = BURN_LOOPS) -> None:
        self.app = app  # `.app`: the gateway finds the routes of the app inside
        self.loops = loops

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            total = 0
            for turn in range(self.loops):
                total += turn
        await self.app(scope, receive, send)


def slowed_fastapi() -> Burn:
    """The FastAPI app, slower by `BURN_LOOPS` loop turns a request."""
    return Burn(load_app("fastapi_app.main:app"))


# --- scenarios and figures ------------------------------------------------------------------


def test_the_split_brings_the_stacks_chat_along_in_the_order_of_the_scenarios() -> None:
    assert expand(["gateway-100-health", SPLIT, "fastapi-health"]) == [
        "fastapi-health",
        "fastapi-chat",
        "flask-chat",
        "gateway-100-health",
        SPLIT,
    ]
    assert expand(["flask-health", "flask-health"]) == ["flask-health"]


def test_an_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown scenario.*gateway-7-health"):
        expand(["fastapi-health", "gateway-7-health"])


def test_the_issue_s_scenarios_are_all_there() -> None:
    assert {(s.target, s.kind) for s in SCENARIOS.values()} == {
        ("fastapi-uvicorn", "health"),
        ("fastapi-uvicorn", "chat"),
        ("flask-a2wsgi", "health"),
        ("flask-a2wsgi", "chat"),
        ("gateway-0", "health"),
        ("gateway-0", "chat"),
        ("gateway-100", "health"),
        ("gateway-100", "chat"),
        ("gateway-50", "chat"),
    }


def test_figures_are_median_batches_and_the_gateway_s_own_cost_their_difference() -> None:
    found = figures(
        {
            "gateway-100-health": [Batch(1050.0), Batch(1049.0), Batch(5000.0)],
            "fastapi-health": [Batch(1000.4), Batch(1200.0), Batch(990.0)],
            "gateway-0-health": [Batch(1600.0)],
        }
    )
    assert found == {"fastapi-health": 1000, "gateway-0-health": 1600, "gateway-100-health": 1050}
    assert list(found) == ["fastapi-health", "gateway-0-health", "gateway-100-health"]
    # flask-health was not counted: gateway-0-health has no own cost.
    assert own_costs(found) == {"gateway-100-health": 50}


def test_the_split_is_brought_to_an_even_split_of_the_stacks() -> None:
    # Alone: FastAPI 10 000, Flask 12 000 a turn; even: 11 000. A batch served 3 to 1 by
    # FastAPI measured 10 700: the stacks' share was 10 500, so the gateway's own is 200.
    found = figures(
        {
            "fastapi-chat": [Batch(10_000.0)],
            "flask-chat": [Batch(12_000.0)],
            SPLIT: [
                Batch(10_700.0, {"fastapi": 15, "flask": 5}),
                Batch(11_700.0, {"flask": 20}),
                Batch(99_999.0, {"fastapi": 20}),
            ],
        }
    )
    assert found == {
        "fastapi-chat": 10_000,
        "flask-chat": 12_000,
        SPLIT: 11_200,  # the batches even out to 11 200, 11 700 and 100 999
    }
    assert own_costs(found) == {SPLIT: 200}


def test_the_split_without_both_stacks_has_no_figure() -> None:
    split = [Batch(10_700.0, {"fastapi": 15, "flask": 5})]
    assert figures({"fastapi-chat": [Batch(10_000.0)], SPLIT: split}) == {"fastapi-chat": 10_000}


def test_a_split_served_by_a_stranger_is_an_error() -> None:
    with pytest.raises(ValueError, match="not the stacks"):
        figures(
            {
                "fastapi-chat": [Batch(1.0)],
                "flask-chat": [Batch(1.0)],
                SPLIT: [Batch(1.0, {"django": 4})],
            }
        )


def test_each_own_cost_subtracts_the_stack_it_fronts() -> None:
    assert OWN == {
        "gateway-0-health": ("flask-health",),
        "gateway-100-health": ("fastapi-health",),
        "gateway-0-chat": ("flask-chat",),
        "gateway-100-chat": ("fastapi-chat",),
        "gateway-50-chat": ("fastapi-chat", "flask-chat"),
    }


def test_the_idle_work_comes_from_two_counts_of_different_lengths() -> None:
    # 1 000 a count, 200 000 a second.
    idle = Idle.between((51_000, 0.25), (251_000, 1.25))
    assert [idle.fixed, idle.per_second] == pytest.approx([1_000, 200_000])
    assert idle.of(0.5) == pytest.approx(101_000)


@pytest.mark.parametrize(
    ("short", "long", "expected"),
    [
        ((5_000, 0.25), (4_000, 1.25), Idle(5_000, 0.0)),  # never negative
        ((100, 0.25), (500_100, 1.25), Idle(0.0, 500_000)),  # the fixed part neither
    ],
)
def test_the_idle_work_is_never_negative(
    short: tuple[int, float], long: tuple[int, float], expected: Idle
) -> None:
    assert Idle.between(short, long) == expected


def test_idle_counts_of_one_length_are_an_error() -> None:
    with pytest.raises(ValueError, match="longer"):
        Idle.between((1, 1.0), (2, 1.0))


def test_ratios_are_fastapi_over_flask_and_the_gateway_s_share_of_each_path() -> None:
    found = {
        "fastapi-chat": 9_000,
        "flask-chat": 12_000,
        "fastapi-health": 800,
        "gateway-100-health": 1_000,
    }
    assert ratios(found) == {
        "fastapi/flask chat": pytest.approx(0.75),
        "gateway share gateway-100-health": pytest.approx(0.2),
    }


# --- verdicts and the baseline --------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "verdict"),
    [
        (1_030, "ok"),  # exactly at the margin
        (1_031, "slower"),  # just past it
        (970, "ok"),
        (969, "faster"),
        (1_000, "ok"),
    ],
)
def test_verdicts_at_the_margin(now: int, verdict: str) -> None:
    row = Row("fastapi-health", 1_000, now, 3.0)
    assert (row.verdict, row.failed) == (verdict, verdict == "slower")


def test_a_scenario_without_a_baseline_is_new_and_passes() -> None:
    row = Row("gateway-0-chat", None, 5, 3.0)
    assert (row.change, row.verdict, row.failed) == (None, "new", False)


def test_the_baseline_s_own_margin_wins_over_the_default() -> None:
    baseline = Baseline(
        scenarios={"fastapi-health": 1_000, "gateway-100-health": 50},
        margins={"gateway-100-health": 20.0},
    )
    found = {"fastapi-health": 1_020, "gateway-100-health": 59, "flask-health": 7}
    assert compare(baseline, found, 3.0) == [
        Row("fastapi-health", 1_000, 1_020, 3.0),
        Row("gateway-100-health", 50, 59, 20.0),
        Row("flask-health", None, 7, 3.0),
    ]


def test_the_gateway_s_health_paths_have_a_narrower_margin() -> None:
    # 20 000 instructions more on a 1.05 million `/health` through the gateway: +1.9 %,
    # within the default 3 %, past the 1 % of the gateway's `/health` paths.
    baseline = Baseline(
        scenarios={
            "gateway-100-health": 1_050_000,
            "gateway-0-health": 1_550_000,
            "fastapi-health": 1_000_000,
        }
    )
    found = {
        "gateway-100-health": 1_070_000,
        "gateway-0-health": 1_570_000,
        "fastapi-health": 1_020_000,
    }
    assert [(row.margin, row.verdict) for row in compare(baseline, found, 3.0)] == [
        (1.0, "slower"),
        (1.0, "slower"),
        (3.0, "ok"),
    ]
    assert MARGINS == {"gateway-0-health": 1.0, "gateway-100-health": 1.0}


def test_the_baseline_can_gate_or_ungate_a_scenario() -> None:
    baseline = Baseline(
        scenarios={"gateway-0-chat": 100, "flask-health": 100},
        margins={"gateway-0-chat": 50.0, "flask-health": None},
    )
    rows = compare(baseline, {"gateway-0-chat": 151, "flask-health": 900}, 3.0)
    assert [(row.verdict, row.describe()) for row in rows] == [
        (
            "slower",
            "gateway-0-chat: 100 -> 151 instructions per request (+51.00 %, margin 50 %)",
        ),
        ("info", "flask-health: 100 -> 900 instructions per request (+800.00 %, not gated)"),
    ]


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_the_baseline_is_read(tmp_path: Path) -> None:
    data = {"unit": "instructions per request (callgrind Ir)", "scenarios": {"flask-chat": 9}}
    assert load_baseline(_write(tmp_path / "b.json", data)) == Baseline(scenarios={"flask-chat": 9})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"baseline .*b\.json is missing: `python -m load_test gate --update` writes it"),
        ("{not json", r"baseline .*b\.json is not valid: \(the file\): Invalid JSON"),
        ({"scenarios": {"flask-chat": 0}}, r"not valid: scenarios\.flask-chat: .*greater than 0"),
        ({"scenarios": {}, "extra": 1}, r"not valid: extra: Extra inputs"),
        ({"unit": "ms", "scenarios": {}}, r"not valid: unit: "),
        ({}, r"not valid: scenarios: Field required$"),
        ({"scenarios": {"a": -1, "b": "x"}}, r"\(and 1 more\)$"),
    ],
)
def test_a_missing_or_invalid_baseline_is_one_line(
    tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "b.json"
    if content is not None:
        _write(path, content)
    with pytest.raises(BaselineError, match=message) as raised:
        load_baseline(path)
    assert "\n" not in str(raised.value)


def test_an_update_keeps_what_was_not_measured_and_the_margins() -> None:
    old = Baseline(
        scenarios={"gateway-0-chat": 5, "fastapi-health": 1, "gateway-0-chat-own": 3},
        margins={"gateway-0-chat": 9.0},
    )
    new = updated(old, {"fastapi-health": 2, "flask-health": 4}, {"batches": 3})
    # A name that is no scenario's any more (the own costs were, once) is dropped.
    assert new == Baseline(
        scenarios={"fastapi-health": 2, "flask-health": 4, "gateway-0-chat": 5},
        margins={"gateway-0-chat": 9.0},
        measured={"batches": 3},
    )
    assert list(new.scenarios) == ["fastapi-health", "flask-health", "gateway-0-chat"]
    assert updated(None, {"flask-chat": 1}, {}) == Baseline(scenarios={"flask-chat": 1})


@pytest.mark.parametrize(
    ("measured", "plan", "expected"),
    [
        ({}, Plan(requests=7), None),  # a baseline written by hand says nothing
        ({"requests": 50, "chat_requests": 40, "batches": 3, "margin_percent": 9}, Plan(), None),
        (
            {"requests": 50, "chat_requests": 40, "batches": 3},
            Plan(requests=20, batches=5),
            "was counted with --requests 50 (this run: 20), --batches 3 (this run: 5): "
            "run with its options, or --update it",
        ),
    ],
)
def test_a_baseline_counted_otherwise_is_refused(
    measured: dict[str, Any], plan: Plan, expected: str | None
) -> None:
    assert mismatch(Baseline(scenarios={"flask-chat": 1}, measured=measured), plan) == expected


def test_the_committed_baseline_is_valid_and_covers_every_scenario() -> None:
    committed = load_baseline(BASELINE)
    assert set(committed.scenarios) == set(SCENARIOS)


# --- the table, the summary, the reports ----------------------------------------------------

ROWS = [
    Row("fastapi-health", 1_000_000, 1_010_000, 3.0),
    Row("gateway-100-health", 1_050_000, 1_070_000, 1.0),
    Row("flask-health", 1_500_000, 1_400_000, 3.0),
    Row("gateway-0-chat", None, 16_000_000, 3.0),
    Row("flask-chat", 100_000, 130_000, None),
]


def _report(rows: list[Row], environment: dict[str, str] | None = None) -> Report:
    batches = {"fastapi-health": [Batch(1_010_000.0, background=4_000.0)]}
    settings = {"batches": 3, "environment": environment or {}}
    own = {"gateway-100-health": 60_123}
    return Report(rows, {"fastapi/flask chat": 0.87}, own, batches, settings, 95.0)


def test_the_table_has_each_scenario_s_change_margin_and_verdict() -> None:
    lines = table(ROWS).splitlines()
    assert lines[0].split() == ["scenario", "baseline", "now", "change", "margin", "verdict"]
    assert [line.split() for line in lines[1:]] == [
        ["fastapi-health", "1,000,000", "1,010,000", "+1.00", "%", "3", "%", "ok"],
        ["gateway-100-health", "1,050,000", "1,070,000", "+1.90", "%", "1", "%", "slower"],
        ["flask-health", "1,500,000", "1,400,000", "-6.67", "%", "3", "%", "faster"],
        ["gateway-0-chat", "-", "16,000,000", "-", "3", "%", "new"],
        ["flask-chat", "100,000", "130,000", "+30.00", "%", "-", "info"],
    ]


def test_the_summary_names_what_failed_or_what_got_cheaper() -> None:
    assert summary(ROWS) == "gate: FAIL, more expensive than allowed: gateway-100-health"
    assert summary([ROWS[0], ROWS[2], ROWS[4]]) == (
        "gate: PASS, 2 scenarios within their margins, 1 shown, not gated "
        "(flask-health cheaper: `--update` records it)"
    )


def test_junit_has_one_testcase_per_scenario_and_names_the_failure() -> None:
    suite = to_junit(_report(ROWS)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == [row.scenario for row in ROWS]
    assert cases["gateway-100-health"].get("classname") == "gate.health"
    assert cases["flask-chat"].get("classname") == "gate.chat"
    failure = cases["gateway-100-health"].find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "gateway-100-health: 1,050,000 -> 1,070,000 instructions per request (+1.90 %, margin 1 %)"
    )
    assert cases["gateway-0-chat"].find("skipped") is not None
    assert [len(list(cases[name])) for name in ("fastapi-health", "flask-health")] == [0, 0]


def test_the_page_escapes_what_it_shows_and_gives_the_verdict() -> None:
    page = render_html(_report(ROWS, {"GATEWAY_FASTAPI_APP": "<script>x</script>"}))
    assert "<script>x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "gate: FAIL, more expensive than allowed: gateway-100-health" in page
    assert '<td class="slower">slower</td>' in page
    assert "+1.90 %" in page
    # The gateway's own cost, beside the ratios, with what it subtracts.
    assert '<td>gateway-100-health</td><td>fastapi-health</td><td class="n">60,123</td>' in page


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["gate", "--scenarios", "fastapi-health,nope"],
        ["gate", "--requests", "0"],
        ["gate", "--batches", "0"],
        ["gate", "--margin", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_missing_baseline_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none.json"
    assert main(["gate", "--baseline", str(path), "--report", str(tmp_path / "r")]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"error: baseline {path} is missing: `python -m load_test gate --update` writes it\n",
    )


def test_a_baseline_counted_otherwise_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "b.json", {"scenarios": {"flask-chat": 1}, "measured": {"batches": 3}})
    argv = ["gate", "--baseline", str(path), "--batches", "1", "--report", str(tmp_path / "r")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: baseline {path} was counted with --batches 3 (this run: 1): run with its "
        "options, or --update it\n"
    )


def test_without_valgrind_it_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["gate", "--update", "--baseline", str(tmp_path / "b.json"), "--quiet"]
    assert main([*argv, "--report", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: valgrind is not installed (Debian: apt-get install valgrind)")
    assert err.count("\n") == 1


# --- a slower gateway fails -----------------------------------------------------------------


def _failures(junit: Path) -> dict[str, str]:
    suite = ET.parse(junit).find("testsuite")
    assert suite is not None
    return {
        str(case.get("name")): str(failure.get("message"))
        for case in suite.iter("testcase")
        if (failure := case.find("failure")) is not None
    }


def test_a_slower_gateway_fails_the_gate_and_the_same_build_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # valgrind is a requirement of this test (`make gate-check` installs it), never a reason
    # to skip: without it this test fails saying so.
    overhead.check_callgrind()
    monkeypatch.delenv("GATEWAY_FASTAPI_APP", raising=False)
    scenarios = "fastapi-health,gateway-100-health"
    argv = ["gate", "--scenarios", scenarios, "--requests", "20", "--quiet"]
    argv += ["--baseline", str(tmp_path / "baseline.json")]
    assert main([*argv, "--update", "--report", str(tmp_path / "normal")]) == 0
    capsys.readouterr()

    monkeypatch.setenv("GATEWAY_FASTAPI_APP", f"{__name__}:slowed_fastapi()")
    assert main([*argv, "--report", str(tmp_path / "slowed")]) == 1
    out = capsys.readouterr().out
    print(out)  # shown with -s: the figures of the slowed build
    assert "gate: FAIL, more expensive than allowed: gateway-100-health\n" in out
    failures = _failures(tmp_path / "slowed" / "junit.xml")
    assert list(failures) == ["gateway-100-health"]
    assert failures["gateway-100-health"].startswith("gateway-100-health: ")
    report = json.loads((tmp_path / "slowed" / "gate.json").read_text())
    assert (
        report["settings"]["environment"]["GATEWAY_FASTAPI_APP"]
        == os.environ["GATEWAY_FASTAPI_APP"]
    )

    monkeypatch.delenv("GATEWAY_FASTAPI_APP")
    assert main([*argv, "--report", str(tmp_path / "same")]) == 0
    assert "gate: PASS" in capsys.readouterr().out
    assert _failures(tmp_path / "same" / "junit.xml") == {}
