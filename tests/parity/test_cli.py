"""The command line: exit codes, one-line setup errors, the report files, stale rules."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.local.processes import free_port
from parity_tests.cases import Case, select
from parity_tests.cli import main

from .conftest import Rewrite, Stacks, json_change

ROOT = Path(__file__).resolve().parents[2]


def _args(stacks: Stacks) -> list[str]:
    return [
        "--flask-url",
        stacks.targets.flask.base_url,
        "--fastapi-url",
        stacks.targets.fastapi.base_url,
    ]


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("python -m parity_tests: error: ")
    return lines[0]


def test_an_unreachable_url_is_a_setup_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--flask-url", url, "--fastapi-url", url]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"flask at {url} is unreachable" in line


def test_an_unreachable_gateway_is_a_setup_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--gateway-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "unreachable" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cases: [\n  {name: x\n", "bad.yaml: invalid YAML at line"),
        ("cases:\n  - {name: x, request: {path: nope}}\n", "cases[0] (x).request.path: must start"),
        ("cases:\n  - {name: x, request: {path: /a, bodyy: 1}}\n", "unknown field 'bodyy'"),
        ("cases:\n  - {name: x, steps: []}\n", "cases[0] (x).steps: must be a non-empty list"),
        ("cases:\n  - {name: 'a b', request: {path: /}}\n", "cases[0].name: 'a b' is not"),
        (
            "cases:\n  - {name: x, request: {path: /}, stack: django}\n",
            "cases[0] (x).stack: must be flask or fastapi, not 'django'",
        ),
        (
            "cases:\n  - {name: x, request: {path: /}, capture: {s: session_id}}\n",
            "cases[0] (x).capture.s: bad path 'session_id'",
        ),
        ("hello: []\n", "bad.yaml: must be a mapping with one key, 'cases'"),
    ],
)
def test_a_bad_corpus_is_a_setup_error_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    # No target is reached: the corpus is checked before anything starts.
    assert main(["--corpus", str(tmp_path), "--gateway-url", "http://127.0.0.1:9"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(tmp_path / "bad.yaml") in line
    assert expected in line


def test_a_case_name_used_twice_is_a_setup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text("cases:\n  - {name: x, request: {path: /}}\n")
    (tmp_path / "b.yaml").write_text("cases:\n  - {name: x, request: {path: /health}}\n")
    assert main(["--corpus", str(tmp_path), "--list"]) == 2
    assert "case 'x' is also in" in _one_line_error(capsys.readouterr().err)


def test_bad_rules_are_a_setup_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("volatile:\n  - {path: $.a, check: uuid4}\n")
    assert main(["--rules", str(rules), "--gateway-url", "http://127.0.0.1:9"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"{rules}: volatile[0] ($.a): unknown check 'uuid4'" in line


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return int(str(exit_.code))


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeat", "0"],
        ["--max-latency-ratio", "-1"],
        ["--flask-url", "http://127.0.0.1:1"],
        ["--gateway-url", "ftp://example"],
        ["--case", "no-such-case-anywhere", "--list"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == 2
    _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # Checked before anything is loaded: the missing corpus is never reached.
        (
            ["-k", "chat and", "--corpus", "/no/such/corpus"],
            "bad -k expression 'chat and': expected a word, 'not' or '(' at column 9, got the end",
        ),
        (["-k", "chat", "-k", ""], "bad -k expression '': empty expression"),
        # A typo must not quietly run nothing.
        (["-k", "chat and not chat"], "no case matches -k 'chat and not chat'"),
        (["-k", "zzz", "-k", "not /"], "no case matches -k 'zzz' or -k 'not /'"),
    ],
)
def test_a_bad_or_empty_k_expression_is_a_usage_error_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code([*argv, "--list"]) == 2
    assert _one_line_error(capsys.readouterr().err) == f"python -m parity_tests: error: {message}"


@pytest.mark.parametrize(
    ("expression", "wanted"),
    [
        ("chat", lambda case_id: "chat" in case_id),  # the README's --noise-check -k chat
        ("not hang", lambda case_id: case_id != "faults/fault-hang"),
        (
            "CHAT/ and not hello",
            lambda case_id: case_id.startswith("chat/") and "hello" not in case_id,
        ),
    ],
)
def test_k_lists_the_cases_its_expression_selects(
    expression: str,
    wanted: Callable[[str], bool],
    corpus: list[Case],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [case.id for case in corpus]
    assert {"faults/fault-hang", "chat/chat-hello", "cors/cors-origin-chat"} <= set(ids)
    assert main(["--list", "-k", expression]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [case_id for case_id in ids if wanted(case_id)]
    assert 0 < len(listed) < len(ids)


def test_k_not_leaves_exactly_those_cases_out_of_a_run(
    stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "health.yaml").write_text(
        "cases:\n"
        "  - {name: health, request: {path: /health}}\n"
        "  - {name: health-head, request: {method: HEAD, path: /health}}\n"
        "  - {name: health-head-again, request: {method: HEAD, path: /health}}\n"
        "  - {name: health-query, request: {path: '/health?probe=1'}}\n"
    )
    report = tmp_path / "report"
    argv = [*_args(stacks), "--corpus", str(corpus), "--report", str(report)]
    with stacks.alter():
        code = main([*argv, "-k", "not HEAD"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_ids = ["health/health", "health/health-query"]
    assert [c["id"] for c in json.loads((report / "report.json").read_text())["cases"]] == run_ids
    assert [line.split()[-2] for line in captured.err.splitlines()] == run_ids  # progress


def test_stale_rules_are_reported_for_a_whole_corpus_only(
    stacks: Stacks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        (ROOT / "parity_tests" / "rules.yaml").read_text()
        + "  - path: $.never_answered\n    reason: nothing answers this\n"
    )
    # A corpus of one case, run whole: what it never needed is stale.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "health.yaml").write_text(
        "cases:\n  - {name: health-head, request: {method: HEAD, path: /health}}\n"
    )
    report = tmp_path / "report"
    whole = [*_args(stacks), "--rules", str(rules), "--corpus", str(corpus)]
    with stacks.alter():
        code = main([*whole, "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0  # stale rules are reported, not failures
    assert "expected $.never_answered: nothing answers this" in out
    assert "result: PASS" in out
    summary = json.loads((report / "report.json").read_text())["summary"]
    assert "expected $.never_answered: nothing answers this" in summary["stale_rules"]
    # A subset (-k) of the shipped corpus could not need every rule: not judged.
    with stacks.alter():
        code = main([*_args(stacks), "--rules", str(rules), "-k", "health/health-head"])
    out = capsys.readouterr().out
    assert code == 0
    assert "stale rules: (subset run: not judged)" in out.splitlines()
    assert "never_answered" not in out


def test_bad_settings_in_the_environment_are_a_setup_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_MAX_POOL_CONNECTIONS", "abc")
    assert main(["-k", "health/health-head"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "AWS_MAX_POOL_CONNECTIONS" in line and "'abc'" in line


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("no_such_module_anywhere:create_app", "cannot load the app factory"),
        ("legacy_flask:no_such_factory", "cannot load the app factory"),
        ("legacy_flask", "is not an import string 'module:attribute'"),
    ],
)
def test_an_app_factory_that_cannot_load_is_a_setup_error(
    factory: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--flask-app", factory, "-k", "health/health-head"]) == 2
    assert expected in _one_line_error(capsys.readouterr().err)


def test_an_unwritable_report_directory_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # The unreachable gateway is never tried: the report directory is checked first.
    argv = ["--gateway-url", "http://127.0.0.1:9", "--report", str(blocker / "reports")]
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"cannot write the reports into {blocker / 'reports'}" in line


class _ClosedPipe:
    """stdout whose reader went away, as under `--list | head -1`."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["--list"]) == 0
    assert capsys.readouterr().err == ""


def test_the_suite_imports_no_stack() -> None:
    # DESIGN: parity_tests reaches the stacks over HTTP/ASGI only; the in-process apps are
    # built from import strings.
    stacks = {"legacy_flask", "fastapi_app", "gateway"}
    found = []
    for path in sorted((ROOT / "parity_tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in stacks]
    assert found == []


def test_the_cli_fails_an_altered_stack_and_writes_its_reports(
    stacks: Stacks, corpus: list[Case], tmp_path: Path
) -> None:
    def reworded(method: str, path: str, status: int, data: dict[str, object]) -> None:
        if data.get("error") == "Message is required":
            data["error"] = "Message is missing"

    pattern = "validation/message-"
    selected = [case.id for case in select(corpus, [pattern])]
    # Every case whose answer is "Message is required", and only those.
    failing = {
        f"validation/message-{name}"
        for name in ("missing", "missing-with-other-fields", "null", "empty", "blank", "invisible")
    } | {"validation/message-blank-newlines-tabs"}
    assert failing < set(selected)
    with stacks.alter(fastapi=lambda app: Rewrite(app, json_change(reworded))):
        command = [sys.executable, "-m", "parity_tests", *_args(stacks), "-k", pattern]
        done = subprocess.run(
            [*command, "--report", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    # stderr is not a terminal: one plain progress line per case, no carriage returns.
    progress = done.stderr.splitlines()
    assert len(progress) == len(selected) and "\r" not in done.stderr
    assert progress[-1].startswith(f"[{len(selected):>3}/{len(selected)}] ")
    assert f"result: FAIL, {len(failing)} of {len(selected)} cases" in done.stdout
    assert '$.error: "Message is required" -> "Message is missing"' in done.stdout

    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["summary"]["failed_cases"]) == failing
    assert report["summary"]["exit_code"] == 1
    assert [case["id"] for case in report["cases"]] == selected
    missing = next(case for case in report["cases"] if case["id"] == "validation/message-missing")
    breaking = [d for d in missing["steps"][0]["differences"] if d["severity"] == "breaking"]
    assert breaking == [
        {
            "step": 1,
            "path": "$.error",
            "kind": "value",
            "severity": "breaking",
            "legacy": "Message is required",
            "candidate": "Message is missing",
            "reason": "",
        }
    ]

    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    testcases = suite.findall("testcase")
    assert len(testcases) == len(selected) == int(suite.get("tests", "0"))
    failed = {
        f"validation/{case.get('name')}" for case in testcases if case.find("failure") is not None
    }
    assert failed == failing

    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    # The verdict first, then the failing cases, each linked to its side-by-side block.
    assert page.index('<header class="verdict fail">') < page.index('<ol class="failing">')
    top = page[page.index('<ol class="failing">') : page.index("</ol>")]
    assert set(re.findall(r'<a href="#([^"]+)">', top)) == failing
    assert 'id="validation/message-missing"' in page
    assert "Message is missing" in page and "<svg" in page
    assert "http://" not in page.replace(stacks.targets.flask.base_url, "").replace(
        stacks.targets.fastapi.base_url, ""
    ).replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from elsewhere
