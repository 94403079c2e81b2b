"""Rate limiting: one budget per client in DynamoDB, shared by both stacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from shared import contract
from shared.settings import Settings

from .conftest import Stacks

CHAT = "/api/v1/chat"
WINDOW = 3600


def _wait_for_room_in_window(margin: float = 15.0) -> None:
    # A fixed window that closes mid-test would reset the budget and fail the test
    # for a reason it does not check.
    remaining = WINDOW - time.time() % WINDOW
    if remaining < margin:
        time.sleep(remaining + 0.5)


def test_budget_is_shared_by_both_stacks(
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        rate_limit_requests=4, rate_limit_window_seconds=WINDOW, dynamodb_table="chat_sessions"
    )
    with start_stacks(settings) as stacks:
        _wait_for_room_in_window()
        statuses = []
        for stack in ("flask", "fastapi", "flask", "fastapi", "flask", "fastapi"):
            with stacks.client(stack) as client:
                response = client.post(CHAT, json={"message": "counted"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"] == contract.RATE_LIMITED
                assert 0 < int(response.headers["retry-after"]) <= WINDOW
        with stacks.client("flask") as client:
            health = client.get("/health")
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert health.status_code == 200  # only chat turns are limited


def test_rate_limiting_is_off_by_default(stacks: Stacks, stack: str) -> None:
    with stacks.client(stack) as client:
        statuses = {client.post(CHAT, json={"message": f"n{i}"}).status_code for i in range(12)}
    assert statuses == {200}
