"""What the simulated users send: chat conversations, or health checks.

A scenario makes users; a user says what its next request is and learns from each answer,
as a client would: a chat user starts a conversation without a `session_id`, keeps the one
the server gives back for the next turns, and starts a new conversation after a few turns
(or when a turn failed and left it without an id).
"""

from __future__ import annotations

import json
import math
from typing import Protocol

from load_test.client import Request, Response

CHAT_PATH = "/api/v1/chat"
HEALTH_PATH = "/health"
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))

_QUESTIONS = (
    "Where is my order?",
    "Can I change the delivery address?",
    "What does the premium plan include?",
    "How do I reset my password?",
    "Which payment methods do you accept?",
    "Can you summarise what we discussed so far?",
)


class User(Protocol):
    """One simulated client."""

    def next_request(self) -> Request:
        """The request this user sends now."""
        ...

    def observe(self, response: Response | None) -> None:
        """Learn from the answer (None when there was none)."""
        ...


class Scenario(Protocol):
    """A named way of making users."""

    name: str

    def new_user(self, number: int) -> User:
        """User `number` (0, 1, ...), deterministic for a given number."""
        ...


class ChatUser:
    """Conversations of `turns` turns each, continued through the `session_id` answered."""

    def __init__(self, number: int, turns: int) -> None:
        self.number = number
        self.turns = turns
        self.conversation = 0
        self.turn = 0
        self.session_id: str | None = None

    def next_request(self) -> Request:
        """A new conversation's first turn, or the next turn of the current one."""
        if self.session_id is None or self.turn >= self.turns:
            self.session_id = None
            self.conversation += 1
            self.turn = 0
        question = _QUESTIONS[(self.number + self.conversation + self.turn) % len(_QUESTIONS)]
        payload: dict[str, str] = {
            "message": f"{question} (user {self.number}, conversation {self.conversation}, "
            f"turn {self.turn + 1})"
        }
        if self.session_id is not None:
            payload["session_id"] = self.session_id
        self.turn += 1
        return Request("POST", CHAT_PATH, json.dumps(payload).encode(), JSON_HEADERS)

    def observe(self, response: Response | None) -> None:
        """Keep the conversation's id from a 200; anything else ends the conversation."""
        if response is None or response.status != 200:
            self.session_id = None
            return
        try:
            session_id = json.loads(response.body).get("session_id")
        except (ValueError, AttributeError):
            session_id = None
        self.session_id = session_id if isinstance(session_id, str) else None


class ChatScenario:
    """Chat turns: new and continuing conversations."""

    name = "chat"

    def __init__(self, turns: int = 5) -> None:
        if turns < 1:
            raise ValueError("a conversation has at least one turn")
        self.turns = turns

    def new_user(self, number: int) -> User:
        """A user who holds `turns`-turn conversations one after another."""
        return ChatUser(number, self.turns)


class HealthUser:
    """`GET /health`, again and again."""

    _REQUEST = Request("GET", HEALTH_PATH, b"", (("Accept", "application/json"),))

    def next_request(self) -> Request:
        """Always the same health check."""
        return self._REQUEST

    def observe(self, response: Response | None) -> None:
        """Nothing to learn."""


class HealthScenario:
    """Health checks only: the stacks' overhead without the agent or the store."""

    name = "health"

    def new_user(self, number: int) -> User:
        """A user polling `/health`."""
        return HealthUser()


def build_scenario(name: str, *, turns: int = 5) -> Scenario:
    """The scenario called `name` ("chat" or "health")."""
    if name == "chat":
        return ChatScenario(turns)
    if name == "health":
        return HealthScenario()
    raise ValueError(f"unknown scenario {name!r} (chat, health)")


SCENARIOS = ("chat", "health")


def parse_wait(text: str) -> tuple[float, float]:
    """A user's wait between its requests, as locust paces users (`LOAD_TEST_WAIT`):
    "MIN,MAX" seconds, drawn uniformly between the two, or one number of seconds ("0":
    none, the closed loop of `python -m load_test`). ValueError for anything else."""
    parts = text.split(",")
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (-1.0, -1.0)
    except ValueError:
        low = high = -1.0
    if not 0 <= low <= high < math.inf:
        raise ValueError(f"expected SECONDS or MIN,MAX seconds (0 <= MIN <= MAX), got {text!r}")
    return low, high
