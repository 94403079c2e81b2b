"""The suite through one gateway: each request pinned to its stack by the override header."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway import create_gateway
from harness.emulators import LocalEmulators
from harness.rules import Rules
from harness.serving import ASGIServer, environment
from harness.settings import GatewaySettings
from parity_tests.corpus import Case
from parity_tests.runner import run
from parity_tests.targets import Targets, parity_settings, through_gateway

from .conftest import pick


@pytest.fixture(scope="module")
def gateway(emulators: LocalEmulators) -> Iterator[Targets]:
    emulators.dynamodb.create_table("gw_parity")
    # 50 %: without the header half the conversations would land on each stack.
    with pytest.MonkeyPatch.context() as patch:
        for name in GatewaySettings.model_fields:
            patch.delenv(f"GATEWAY_{name.upper()}", raising=False)
        gateway_settings = GatewaySettings(fastapi_percent=50, state_table="gw_parity")
    with environment(emulators.env()):
        app = create_gateway(parity_settings(dynamodb_table=emulators.table), gateway_settings)
        server = ASGIServer(app).start()
    try:
        yield through_gateway(server.url)
    finally:
        server.stop()


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
        s.candidate.reply is not None
        and s.candidate.reply.headers.get("x-dualstack-backend") == s.candidate.stack
        for s in conversation.steps
    )
