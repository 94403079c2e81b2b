"""What the emulated agent says: pure functions of the input, the turn and a seed."""

from __future__ import annotations

import hashlib

__all__ = ["compose_reply", "split_text", "token_usage"]

_OPENINGS = (
    "Sure, here is what I found.",
    "Happy to help with that.",
    "Good question.",
    "Let me look into that for you.",
    "Thanks for asking.",
    "Here is a short answer.",
    "I can help with this.",
    "Understood.",
)

# Stands in for the agent's instructions and tool definitions, which a real orchestration
# prompt sends on every turn; keeps input token counts realistically above the word count.
_PROMPT_OVERHEAD_TOKENS = 20


def compose_reply(input_text: str, turn: int, seed: int = 0) -> str:
    """The agent's whole answer to ``input_text`` on ``turn`` (1-based) of a session.

    Stable across processes and machines (sha256, not the per-process salted ``hash()``), and
    different for every turn, so a test can tell turn 1 from turn 2 of the same question.
    """
    digest = hashlib.sha256(f"{seed}\x00{input_text}".encode()).digest()
    opening = _OPENINGS[int.from_bytes(digest[:4], "big") % len(_OPENINGS)]
    return f'{opening} You said: "{input_text}". This is turn {turn} of our conversation.'


def token_usage(input_text: str, reply: str) -> tuple[int, int]:
    """(inputTokens, outputTokens) the emulated model reports for one turn."""
    return len(input_text.split()) + _PROMPT_OVERHEAD_TOKENS, len(reply.split())


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` non-empty pieces of near-equal length.

    Splits characters, not bytes, so each piece encodes to valid UTF-8 on its own.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    count = min(parts, len(text))
    if count == 0:
        return []
    size, extra = divmod(len(text), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces
