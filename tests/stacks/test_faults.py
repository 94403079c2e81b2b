"""Agent and store failures map to the contract's 502/503/504 on both stacks, through the
real clients: the emulator injects the fault, botocore/aiobotocore raise what they raise."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from harness.local.processes import free_port
from shared import contract
from shared.settings import Settings

from .conftest import Stacks

CHAT = "/api/v1/chat"


@pytest.mark.parametrize(
    ("directive", "status", "error", "retry_after"),
    [
        ("throttle", 503, contract.AGENT_THROTTLED, "5"),
        ("stream-throttle", 503, contract.AGENT_THROTTLED, "5"),
        ("fail", 502, contract.AGENT_FAILED, None),
        ("stream-fail", 502, contract.AGENT_FAILED, None),
        ("denied", 502, contract.AGENT_FAILED, None),
    ],
)
def test_agent_faults(
    stacks: Stacks, stack: str, directive: str, status: int, error: str, retry_after: str | None
) -> None:
    with stacks.client(stack) as client:
        response = client.post(CHAT, json={"message": f"hi [[emulator:{directive}]]"})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers.get("retry-after") == retry_after
    assert "Exception" not in response.text and "emulator" not in response.text


def test_failed_turn_is_not_recorded(stacks: Stacks, stack: str) -> None:
    session_id = f"fault-{stack}-{time.time_ns()}"
    with stacks.client(stack) as client:
        failed = client.post(
            CHAT, json={"message": "x [[emulator:fail]]", "session_id": session_id}
        )
    with stacks.client("fastapi") as reader:
        record = reader.get(f"{CHAT}/sessions/{session_id}")
    assert failed.status_code == 502
    assert record.status_code == 404  # no half-written turn


def test_slow_agent_within_timeout_is_served(stacks: Stacks, stack: str) -> None:
    with stacks.client(stack) as client:
        response = client.post(CHAT, json={"message": "slow [[emulator:latency=300]]"})
    assert response.status_code == 200
    assert response.json()["processing_time_ms"] >= 300


def test_store_unreachable_is_503(
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = make_settings(store_max_attempts=1, store_timeout_seconds=1.0)
    with start_stacks(settings, {"AWS_ENDPOINT_URL_DYNAMODB": closed}) as stacks:
        for stack in ("flask", "fastapi"):
            with stacks.client(stack) as client:
                response = client.post(CHAT, json={"message": "hello"})
                health = client.get("/health")
            assert response.status_code == 503, (stack, response.text)
            assert response.json()["error"] == contract.STORE_UNAVAILABLE
            assert response.headers["retry-after"] == "5"
            assert "127.0.0.1" not in response.text
            assert health.status_code == 200  # liveness does not depend on the store
        with stacks.client("fastapi") as client:
            detailed = client.get("/health/detailed")
        assert detailed.status_code == 503
        assert detailed.json()["status"] == "unhealthy"
        assert detailed.json()["checks"]["dynamodb"]["ok"] is False
        assert detailed.json()["checks"]["agent"]["ok"] is True
