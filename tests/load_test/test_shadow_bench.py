"""The shadow benchmark: its ABBA order, its verdict at the limits, and a tiny real run
through the gateway and the emulators (timing ratios are not asserted: seconds of load on a
shared machine decide nothing; what is asserted is what a broken benchmark gets wrong)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.gateway.shadow import OUTCOMES
from load_test.__main__ import main
from load_test.shadow import Run, ShadowPlan, compare, order, outcome_counts
from load_test.stats import Sample

NONE = dict.fromkeys(OUTCOMES, 0)


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        (2, [0, 100]),
        (4, [0, 100, 100, 0]),
        (6, [0, 100, 100, 0, 0, 100]),
        (8, [0, 100, 100, 0, 0, 100, 100, 0]),
    ],
)
def test_runs_alternate_abba(rounds: int, expected: list[float]) -> None:
    assert order(rounds) == expected


@pytest.mark.parametrize("rounds", [0, 1, 3, 5])
def test_an_odd_or_too_small_number_of_runs_is_refused(rounds: int) -> None:
    with pytest.raises(ValueError, match="--rounds must be even and at least 2"):
        ShadowPlan(rounds=rounds)


def test_outcomes_are_summed_over_the_routes() -> None:
    summary = {
        "in_flight": 0,
        "routes": {
            "/api/v1/chat": {**NONE, "match": 7, "dropped": 1},
            "/api/v1/sessions/{id}": {**NONE, "match": 2, "breaking": 1},
        },
    }
    assert outcome_counts(summary) == {**NONE, "match": 9, "breaking": 1, "dropped": 1}
    assert outcome_counts({"routes": {}}) == NONE


def _run(number: int, percent: float, seconds: float, shadows: dict[str, int]) -> Run:
    samples = [Sample(i / 10, seconds, "ok", 200, "flask") for i in range(10)]
    cpu = {"gateway": 1.0, "agent": 0.5, "dynamodb": 0.5, "client": 0.4}
    return Run(number, percent, samples, shadows, cpu, wall_s=10.0)


@pytest.mark.parametrize(
    ("shadowed_s", "within"),
    [(0.022, True), (0.02201, False)],  # x1.1 exactly passes, x1.1005 (shown 1.10) fails
)
def test_the_ratio_is_judged_exactly_at_the_limit(shadowed_s: float, within: bool) -> None:
    runs = [
        _run(1, 0, 0.020, NONE),
        _run(2, 100, shadowed_s, {**NONE, "match": 10}),
        _run(3, 100, shadowed_s, {**NONE, "match": 10}),
        _run(4, 0, 0.020, NONE),
    ]
    result = compare(runs, ShadowPlan(max_ratio=1.1), cores=2)
    assert result["verdict"] == {
        "p50_within": within,
        "p99_within": within,
        "all_ok": True,
        "shadows_clean": True,
        "below_saturation": True,  # 2.4 CPU seconds in 10 s on 2 cores: 12 %
    }
    assert result["passed"] is within
    assert result["by_setting"]["100"]["shadows"] == {**NONE, "match": 20}
    assert (result["by_setting"]["0"]["runs"], result["by_setting"]["0"]["requests"]) == (2, 20)
    assert result["cpu_share_max"] == 0.12


def test_breaking_shadows_a_shadow_at_0_a_failed_answer_and_saturation_each_fail() -> None:
    plan = ShadowPlan(max_cpu=0.12)
    runs = [_run(1, 0, 0.02, NONE), _run(2, 100, 0.02, {**NONE, "match": 9, "breaking": 1})]
    assert compare(runs, plan, cores=2)["verdict"]["shadows_clean"] is False
    runs = [_run(1, 0, 0.02, {**NONE, "match": 1}), _run(2, 100, 0.02, NONE)]
    assert compare(runs, plan, cores=2)["verdict"]["shadows_clean"] is False
    runs[0].samples.append(Sample(1.5, 0.001, "status", 503, "gateway"))
    assert compare(runs, plan, cores=2)["verdict"]["all_ok"] is False
    runs = [_run(1, 0, 0.02, NONE), _run(2, 100, 0.02, NONE)]
    assert compare(runs, plan, cores=2)["verdict"]["below_saturation"] is True  # 0.12 itself
    assert compare(runs, plan, cores=1)["verdict"]["below_saturation"] is False  # 0.24


def test_a_tiny_run_measures_both_settings_and_judges_every_shadow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "shadow.json"
    argv = [
        "shadow", "--rounds", "2", "--duration", "2", "--rate", "8", "--warmup", "0.5",
        "--dynamodb", "moto", "--json", str(figures), "--logs", str(tmp_path / "logs"),
    ]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 1), out + err[-3000:]  # 1: a ratio over 1.1 in 2 s runs, not asserted
    data = json.loads(figures.read_text())

    assert [(r["run"], r["shadow_percent"]) for r in data["runs"]] == [(1, 0), (2, 100)]
    off, on = data["by_setting"]["0"], data["by_setting"]["100"]
    for setting in (off, on):
        # 2 s at 8 turns a second: 16 turns sent, every one answered 200 and measured.
        assert setting["runs"] == 1
        assert setting["requests"] == setting["ok"] == 16
        assert 0 < setting["p50_ms"] <= setting["p99_ms"]
    # No shadow at 0 %; at 100 % every primary answer was shadowed and judged a match on
    # identical stacks (none breaking, failed or dropped).
    assert off["shadows"] == NONE
    assert on["shadows"] == {**NONE, "match": 16}
    assert data["verdict"]["all_ok"] and data["verdict"]["shadows_clean"]
    # The gateway's own counts since it started: the warm-up's 4 turns (0.5 s at 8 a
    # second, shadowed) and the 100 % run's 16, nothing else.
    assert outcome_counts(data["shadow"]) == {**NONE, "match": 4 + 16}
    # The CPU of every party was read, and the run stayed far below saturation.
    for run in data["runs"]:
        assert set(run["cpu_s"]) == {"gateway", "dynamodb", "agent", "client"}
        assert run["cpu_s"]["gateway"] > 0
        assert 0 < run["cpu_share"] < data["plan"]["max_cpu"]

    lines = out.splitlines()
    assert lines[2].split()[:3] == ["0", "16", "16"]
    assert lines[3].split()[:3] == ["100", "16", "16"]
    assert lines[4].startswith("100/0: p50 x")
    assert lines[-1].startswith("PASSED" if code == 0 else "FAILED: ")
