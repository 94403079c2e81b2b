"""Chat load through the real gateway at 50 %: both halves answer, and the figures per
backend add up to the whole."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from gateway import create_gateway
from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.servers import ASGIServer, environment
from load_test.engine import ClosedLoop, run
from load_test.scenarios import ChatScenario
from load_test.stats import by_backend, summarize
from shared.settings import Settings


def test_chat_through_the_gateway_splits_and_adds_up(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    table = f"load_gw_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    gateway_settings = GatewaySettings(fastapi_percent=50, state_table=table)
    with environment(emulators.env()):
        app = create_gateway(make_settings(), gateway_settings)
        server = ASGIServer(app).start()
    try:
        result = run(server.url, ChatScenario(turns=2), ClosedLoop(8, None, requests=48))
    finally:
        server.stop()
    summary = summarize(result.samples, result.elapsed_s)
    assert (result.sent, summary.measured, summary.ok) == (48, 48, 48)
    assert set(summary.backends) == {"flask", "fastapi"}
    assert sum(summary.backends.values()) == 48
    halves = by_backend(result.samples)
    assert set(halves) == {"flask", "fastapi"}
    assert max(h.max_ms for h in halves.values()) == summary.latency.max_ms
