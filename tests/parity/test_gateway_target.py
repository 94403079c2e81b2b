"""The suite through one gateway: each request pinned to its stack by the override header."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway import create_gateway
from harness.diff import Rules
from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.servers import ASGIServer, environment
from parity_tests.cases import Case
from parity_tests.cli import main
from parity_tests.runner import run
from parity_tests.targets import Targets, parity_settings, through_gateway

from .conftest import pick

TOKEN = "parity-override-token"


@contextmanager
def _serving(
    emulators: LocalEmulators, table: str, token: str | None = None, **options: Any
) -> Iterator[Targets]:
    emulators.dynamodb.create_table(table)
    with pytest.MonkeyPatch.context() as patch:
        for name in GatewaySettings.model_fields:
            patch.delenv(f"GATEWAY_{name.upper()}", raising=False)
        gateway_settings = GatewaySettings(state_table=table, **options)
    with environment(emulators.env()):
        app = create_gateway(parity_settings(dynamodb_table=emulators.table), gateway_settings)
        server = ASGIServer(app).start()
    try:
        yield through_gateway(server.url, token)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(emulators: LocalEmulators) -> Iterator[Targets]:
    # 50 %: without the header half the conversations would land on each stack. In token
    # mode, as a deployment reached from outside would run.
    options = {"override_header": "token", "override_token": TOKEN}
    with _serving(emulators, "gw_parity", TOKEN, fastapi_percent=50, **options) as targets:
        yield targets


def test_a_gateway_ignoring_the_override_header_is_refused(
    emulators: LocalEmulators,
    corpus: list[Case],
    rules: Rules,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Override off, everything on Flask: both runs would be Flask, and "pass".
    with _serving(emulators, "gw_parity_off", fastapi_percent=0, override_header="off") as gw:
        code = main(["--gateway-url", gw.flask.base_url, "-k", "health/health-head"])
        report = run(pick(corpus, "health"), gw, rules)
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"python -m parity_tests: error: {gw.flask.base_url} answered X-Dualstack-Backend: "
        "fastapi with X-Dualstack-Backend: flask; is the gateway's override header off "
        "(GATEWAY_OVERRIDE_HEADER), its token not the one given (--override-token), or its "
        "backend header hidden?"
    )
    # The runner says so too, answer by answer, whatever checked the gateway before.
    (result,) = report.results
    assert result.problems == (
        "step 1: candidate run: asked fastapi, answered by 'flask' (X-Dualstack-Backend)",
    )
    assert report.exit_code == 1


def test_the_corpus_runs_through_the_gateway(
    gateway: Targets, corpus: list[Case], rules: Rules
) -> None:
    cases = pick(
        corpus, "health", "chat-hello", "conversation-flask-to-fastapi", "cors-preflight-chat"
    )
    report = run(cases, gateway, rules)
    assert [r.case.id for r in report.failed] == []
    # Both stacks were reached, each when asked: the versions differ exactly as expected.
    (health, *_) = report.results
    (step,) = health.steps
    assert [
        (d.path, d.legacy, d.candidate, d.severity)
        for d in step.differences
        if d.path == "$.version"
    ] == [("$.version", "1.0.0", "2.0.0", "expected")]
    conversation = report.results[2]
    assert [(s.legacy.stack, s.candidate.stack) for s in conversation.steps] == [
        ("flask", "flask"),
        ("flask", "fastapi"),
        ("flask", "flask"),
        ("fastapi", "fastapi"),
    ]
    assert all(
        s.candidate.response is not None
        and s.candidate.response.headers.get("x-dualstack-backend") == s.candidate.stack
        for s in conversation.steps
    )


def test_the_cli_sends_the_override_token_to_a_gateway_in_token_mode(
    emulators: LocalEmulators,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At 0 %: a request the gateway does not let pin FastAPI is Flask's, every time.
    options = {"override_header": "token", "override_token": TOKEN, "fastapi_percent": 0}
    with _serving(emulators, "gw_parity_token", **options) as gw:
        argv = ["--gateway-url", gw.flask.base_url, "-k", "health/health-head"]
        without = main(argv)
        refused = capsys.readouterr().err
        given = main([*argv, "--override-token", TOKEN])
        wrong = main([*argv, "--override-token", "not-" + TOKEN])
        capsys.readouterr()
        monkeypatch.setenv("GATEWAY_OVERRIDE_TOKEN", TOKEN)
        from_environment = main(argv)
    assert (without, given, wrong, from_environment) == (2, 0, 2, 0)
    assert "X-Dualstack-Backend: fastapi with X-Dualstack-Backend: flask" in refused
    assert TOKEN not in capsys.readouterr().out


def test_the_override_token_needs_a_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--override-token", TOKEN, "--list"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "python -m parity_tests: error: --override-token goes with --gateway-url\n"
    )
