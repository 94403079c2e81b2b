"""`python -m load_test overhead`: the pure parts (ABBA order, ratios, callgrind dumps,
the table) and its usage errors. The measuring parts reuse the engine and the targets,
which tests/load_test/test_engine.py and test_targets.py run against real servers."""

from __future__ import annotations

import pytest

from load_test.__main__ import main
from load_test.overhead import (
    CHAT_PAIRS,
    PAIRS,
    SPLIT,
    SPLIT_STACKS,
    Comparison,
    Figures,
    SplitCost,
    callgrind_total,
    compare,
    round_order,
    split_cost,
    table,
)


def test_rounds_alternate_which_side_goes_first() -> None:
    orders = [round_order(("direct", "gateway"), n) for n in range(4)]
    assert orders == [
        ("direct", "gateway"),
        ("gateway", "direct"),
        ("direct", "gateway"),
        ("gateway", "direct"),
    ]


def test_each_gateway_target_is_paired_with_the_stack_it_fronts() -> None:
    assert PAIRS == (
        ("fastapi-uvicorn", "gateway-100"),
        ("flask-a2wsgi", "gateway-0"),
        ("fastapi-uvicorn", "gateway-upstream-100"),  # upstream mode against the upstream alone
    )
    assert CHAT_PAIRS == (("fastapi-uvicorn", "gateway-upstream-100"),)


def test_the_upstream_pair_compares_chat_turns_too() -> None:
    direct = Figures(chat_rps=[200.0, 210.0], chat_p50_ms=[4.0, 4.2], chat_instructions=900)
    gateway = Figures(chat_rps=[180.0, 170.0], chat_p50_ms=[4.5, 4.9], chat_instructions=1_000)
    result = compare(direct, gateway, CHAT_PAIRS[0])
    assert (result.chat_throughput_ratio, result.chat_added_p50_ms) == (
        pytest.approx(175.0 / 205.0),
        pytest.approx(4.7 - 4.1),
    )
    assert result.chat_instruction_ratio == pytest.approx(0.9)
    assert result.throughput_ratio is None  # no /health figures: no /health ratio
    text = table({"fastapi-uvicorn": direct, "gateway-upstream-100": gateway}, [result])
    assert (
        "gateway-upstream-100 vs fastapi-uvicorn chat:  throughput x0.854  added p50 +0.60 ms"
        "  CPU-bound throughput (instructions) x0.900"
    ) in text
    assert "gateway-upstream-100 vs fastapi-uvicorn:" not in text


def test_ratios_come_from_the_medians_of_both_sides() -> None:
    direct = Figures(rps=[1000.0, 900.0, 5000.0], p50_ms=[1.0, 1.2, 0.9], instructions=1_000_000)
    gateway = Figures(rps=[950.0, 800.0, 100.0], p50_ms=[1.3, 1.25, 9.0], instructions=1_050_000)
    result = compare(direct, gateway, ("fastapi-uvicorn", "gateway-100"))
    assert result == Comparison(
        "fastapi-uvicorn",
        "gateway-100",
        throughput_ratio=pytest.approx(800.0 / 1000.0),
        added_p50_ms=pytest.approx(1.3 - 1.0),
        instruction_ratio=pytest.approx(1_000_000 / 1_050_000),
    )


def test_a_side_without_figures_gives_no_ratio() -> None:
    result = compare(Figures(instructions=900), Figures(rps=[5.0], p50_ms=[1.0]), ("a", "b"))
    assert (result.throughput_ratio, result.added_p50_ms, result.instruction_ratio) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("dump", "total"),
    [
        ("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 305123456\n", 305123456),
        ("events: Ir\nfl=(1) a.c\nfn=(1) main\n0 12\ntotals: 42\n", 42),
    ],
)
def test_callgrind_total_reads_the_dump_summary(dump: str, total: int) -> None:
    assert callgrind_total(dump) == total


def test_a_file_that_is_not_a_dump_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a callgrind dump"):
        callgrind_total("events: Ir\n0 12\n")


def test_the_table_shows_figures_and_each_pair() -> None:
    figures = {
        "fastapi-uvicorn": Figures(rps=[1000.0], p50_ms=[1.0]),
        "gateway-100": Figures(rps=[960.0], p50_ms=[1.15]),
    }
    pairs = [compare(figures["fastapi-uvicorn"], figures["gateway-100"], PAIRS[0])]
    text = table(figures, pairs)
    assert text.splitlines()[1].split() == ["fastapi-uvicorn", "1000.0", "1.00", *"----"]
    assert "gateway-100 vs fastapi-uvicorn:  throughput x0.960  added p50 +0.15 ms" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["overhead", "--rounds", "0"],
        ["overhead", "--duration", "0"],
        ["overhead", "--requests", "0"],
        ["overhead", "--rounds", "many"],
        ["overhead", "--chat-requests", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_split_is_measured_against_both_stacks_it_fronts() -> None:
    assert SPLIT == "gateway-50"
    assert SPLIT_STACKS == {"flask": "flask-a2wsgi", "fastapi": "fastapi-uvicorn"}


def _split_figures(served: dict[str, int]) -> dict[str, Figures]:
    return {
        "fastapi-uvicorn": Figures(chat_instructions=10_000_000),
        "flask-a2wsgi": Figures(chat_instructions=12_000_000),
        SPLIT: Figures(chat_instructions=11_232_000, served=served),
    }


def test_the_split_cost_weights_each_stack_by_the_requests_it_served() -> None:
    # 60 % on FastAPI: the stacks alone would execute 0.6 x 10 M + 0.4 x 12 M = 10.8 M.
    cost = split_cost(_split_figures({"fastapi": 60, "flask": 40}))
    assert cost == SplitCost(
        SPLIT, 11_232_000, pytest.approx(10_800_000), {"fastapi": 60, "flask": 40}
    )
    assert cost is not None and cost.added == pytest.approx(0.04)
    # The same gateway count is cheaper against a mix leaning on the dearer stack.
    leaning = split_cost(_split_figures({"fastapi": 20, "flask": 80}))
    assert leaning is not None and leaning.stacks == pytest.approx(11_600_000)
    assert leaning.added == pytest.approx(11_232_000 / 11_600_000 - 1)


@pytest.mark.parametrize(
    "change",
    ["no-served", "stack-without-chat", "stack-missing", "gateway-without-chat"],
)
def test_no_split_cost_without_every_figure_it_needs(change: str) -> None:
    figures = _split_figures({"fastapi": 60, "flask": 40})
    if change == "no-served":
        figures[SPLIT].served = {}
    elif change == "stack-without-chat":
        figures["flask-a2wsgi"].chat_instructions = None
    elif change == "stack-missing":
        del figures["fastapi-uvicorn"]
    else:
        figures[SPLIT].chat_instructions = None
    assert split_cost(figures) is None


def test_the_table_shows_the_split_cost() -> None:
    text = table(_split_figures({"fastapi": 60, "flask": 40}), [])
    assert text.splitlines()[3].split() == ["gateway-50", *"-----", "11,232,000"]
    assert text.splitlines()[-1] == (
        "gateway-50 chat vs the stacks alone (served fastapi 60, flask 40):"
        "  11,232,000 vs 10,800,000 instructions per request, the gateway adds +4.00%"
    )
