"""The upstream pool's client comparison runs both candidates against a real server."""

from __future__ import annotations

import re

import pytest

from load_test.clients import CLIENTS, main, report


def test_both_clients_are_measured_against_the_trivial_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--requests", "20", "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(CLIENTS) == ["aiohttp", "httpx"]
    for line in lines:
        cpu, wall = re.findall(r"request: ([\d, ]+)", line)
        # Two rounds each, every figure a positive count of microseconds.
        assert [len(cpu.split(",")), len(wall.split(","))] == [2, 2]
        assert all(int(value) > 0 for value in wall.replace(",", " ").split())


def test_the_report_sorts_each_client_s_rounds() -> None:
    text = report({"aiohttp": [(45.2, 70.0), (41.0, 51.4)], "httpx": [(470.0, 516.0)]})
    assert text.splitlines() == [
        "aiohttp  client CPU µs/request: 41, 45   wall µs/request: 51, 70",
        "httpx    client CPU µs/request: 470   wall µs/request: 516",
    ]


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--rounds", "0"])
    assert exited.value.code == 2
