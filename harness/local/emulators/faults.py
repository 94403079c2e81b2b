"""Which fault, if any, one request gets: config, in-band directives and a random draw.

Directives let tests and parity corpora that only reach the stacks over HTTP steer the
emulator through the user's message, e.g. ``"hello [[emulator:throttle]]"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, TypeGuard, get_args

__all__ = [
    "DIRECTIVES",
    "FAULTS",
    "Directives",
    "Fault",
    "choose_fault",
    "is_fault",
    "parse_directives",
]

Fault = Literal["throttle", "stream-throttle", "fail", "stream-fail", "hang", "denied"]
FAULTS: Final[tuple[Fault, ...]] = get_args(Fault)

DIRECTIVES: Final[tuple[str, ...]] = (
    *(f"[[emulator:{fault}]]" for fault in FAULTS),
    "[[emulator:latency=<ms>]]",
)

_DIRECTIVE = re.compile(r"\[\[emulator:([^\]=]*)(?:=([^\]]*))?\]\]")


def is_fault(value: object) -> TypeGuard[Fault]:
    """True if ``value`` names a fault the emulator can inject."""
    return value in FAULTS


@dataclass(frozen=True)
class Directives:
    """What the directives found in one input text ask for (None: not asked)."""

    fault: Fault | None = None
    latency_ms: float | None = None


def parse_directives(text: str) -> Directives:
    """Read ``[[emulator:...]]`` directives from an input text; the last of each kind wins.

    Raises ``ValueError`` for an unknown directive or a bad latency, so a typo in a corpus
    fails loudly instead of silently testing the happy path.
    """
    fault: Fault | None = None
    latency_ms: float | None = None
    for match in _DIRECTIVE.finditer(text):
        name, argument = match.group(1), match.group(2)
        if name == "latency" and argument is not None:
            try:
                latency_ms = float(argument)
            except ValueError:
                raise ValueError(f"bad latency in directive {match.group(0)!r}") from None
            if not 0 <= latency_ms <= 600_000:
                raise ValueError(f"latency out of range in directive {match.group(0)!r}")
        elif argument is None and is_fault(name):
            fault = name
        else:
            raise ValueError(f"unknown emulator directive {match.group(0)!r}")
    return Directives(fault=fault, latency_ms=latency_ms)


def choose_fault(
    configured: Fault | None, fault_rate: float, directives: Directives, draw: float
) -> Fault | None:
    """The fault for one request: a directive always applies; the configured fault applies
    when ``draw`` (uniform in [0, 1)) falls below ``fault_rate``."""
    if directives.fault is not None:
        return directives.fault
    if configured is not None and draw < fault_rate:
        return configured
    return None
