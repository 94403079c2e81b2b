"""Pure parts of the Bedrock emulator: replies, tokens, splitting, directives, config."""

from __future__ import annotations

import pytest

from harness.local.emulators.config import EmulatorConfig
from harness.local.emulators.faults import Directives, choose_fault, parse_directives
from harness.local.emulators.replies import compose_reply, split_text, token_usage


def test_compose_reply_is_deterministic_and_echoes_input_and_turn() -> None:
    reply = compose_reply("What is my balance?", 3, seed=5)
    assert reply == compose_reply("What is my balance?", 3, seed=5)
    assert '"What is my balance?"' in reply
    assert "turn 3 " in reply


def test_compose_reply_differs_by_turn() -> None:
    assert compose_reply("hi", 1) != compose_reply("hi", 2)


def test_compose_reply_known_value() -> None:
    # Pinned: a change here changes every recorded parity baseline.
    assert (
        compose_reply("hi", 1)
        == 'Good question. You said: "hi". This is turn 1 of our conversation.'
    )


def test_seed_changes_the_opening() -> None:
    openings = {compose_reply("hi", 1, seed=seed).split(" You said")[0] for seed in range(20)}
    assert len(openings) > 1


def test_token_usage() -> None:
    assert token_usage("one two three", "a b") == (23, 2)


@pytest.mark.parametrize(
    ("text", "parts", "expected"),
    [
        ("abcdefg", 3, ["abc", "de", "fg"]),
        ("ab", 5, ["a", "b"]),
        ("", 3, []),
        ("héllo🌍", 2, ["hél", "lo🌍"]),
        ("abc", 1, ["abc"]),
    ],
)
def test_split_text(text: str, parts: int, expected: list[str]) -> None:
    assert split_text(text, parts) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", Directives()),
        ("x [[emulator:throttle]]", Directives(fault="throttle")),
        ("[[emulator:stream-fail]] y", Directives(fault="stream-fail")),
        ("[[emulator:latency=250]]", Directives(latency_ms=250.0)),
        ("[[emulator:hang]][[emulator:latency=1.5]]", Directives(fault="hang", latency_ms=1.5)),
        ("[[emulator:fail]] then [[emulator:denied]]", Directives(fault="denied")),
    ],
)
def test_parse_directives(text: str, expected: Directives) -> None:
    assert parse_directives(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[[emulator:thrott]]",
        "[[emulator:latency=fast]]",
        "[[emulator:latency]]",
        "[[emulator:fail=1]]",
    ],
)
def test_parse_directives_rejects_unknown(text: str) -> None:
    with pytest.raises(ValueError):
        parse_directives(text)


@pytest.mark.parametrize(
    ("configured", "rate", "directives", "draw", "expected"),
    [
        (None, 1.0, Directives(), 0.0, None),
        ("fail", 1.0, Directives(), 0.99, "fail"),
        ("fail", 0.5, Directives(), 0.5, None),
        ("fail", 0.5, Directives(), 0.49, "fail"),
        ("fail", 0.0, Directives(fault="hang"), 0.0, "hang"),
        (None, 1.0, Directives(fault="denied"), 0.9, "denied"),
    ],
)
def test_choose_fault(
    configured: str | None, rate: float, directives: Directives, draw: float, expected: str | None
) -> None:
    assert choose_fault(configured, rate, directives, draw) == expected  # type: ignore[arg-type]


def test_config_update_and_json() -> None:
    config = EmulatorConfig().updated({"fault": "throttle", "latency_ms": 5, "seed": 9})
    assert config.to_json() == {
        "latency_ms": 5.0,
        "chunk_count": 3,
        "chunk_delay_ms": 0.0,
        "fault": "throttle",
        "fault_rate": 1.0,
        "seed": 9,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"fault": "explode"},
        {"chunk_count": 0},
        {"chunk_count": 2.5},
        {"latency_ms": -1},
        {"latency_ms": True},
        {"fault_rate": 1.5},
        {"colour": "blue"},
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig().updated(changes)
