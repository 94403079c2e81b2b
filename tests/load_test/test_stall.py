"""The stall benchmark's pieces: requests bound to a stack, and phases cut by time."""

from __future__ import annotations

from load_test.client import Response
from load_test.scenarios import ChatScenario
from load_test.stall import Bound, _phase
from load_test.stats import Sample


def test_bound_users_name_their_stack_and_still_continue_conversations() -> None:
    user = Bound(ChatScenario(turns=2), "fastapi").new_user(0)
    first = user.next_request()
    assert first.headers[-1] == ("X-Dualstack-Backend", "fastapi")
    user.observe(Response(200, {}, b'{"session_id": "s-1", "response": "r"}'))
    second = user.next_request()
    assert b'"session_id": "s-1"' in second.body
    assert second.headers[-1] == ("X-Dualstack-Backend", "fastapi")


def test_phases_take_the_samples_that_started_within_them() -> None:
    fastapi = [Sample(t, 0.01 * (1 + t), "ok", 200, "fastapi") for t in (0.5, 1.5, 2.5, 3.5)]
    fastapi.append(Sample(1.7, 9.0, "timeout", 0))  # no answer: not a FastAPI latency
    flask = [Sample(1.2, 0.05, "ok", 200, "flask"), Sample(2.2, 2.0, "status", 503, "gateway")]
    before, during = _phase(fastapi, flask, 1.0, 2.0), _phase(fastapi, flask, 2.0, 4.0)
    assert (before.fastapi["requests"], before.fastapi["max_ms"]) == (1, 25.0)
    assert (during.fastapi["requests"], during.fastapi["max_ms"]) == (2, 45.0)
    assert (before.flask_statuses, during.flask_statuses) == ({"200": 1}, {"503": 1})
    assert during.flask["max_ms"] == 2000.0
