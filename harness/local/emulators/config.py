"""The Bedrock emulator's run-time options, validated the same way from kwargs and JSON."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.local.emulators.faults import Fault, is_fault

__all__ = ["EmulatorConfig"]


def _number(name: str, value: object, *, low: float, high: float) -> float:
    # bool is an int subclass; True as a latency is a caller's mistake, not 1 ms.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _integer(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


@dataclass(frozen=True)
class EmulatorConfig:
    """Latency, chunking and fault injection of the Bedrock Agent Runtime emulator.

    ``latency_ms`` delays the answer (status line included), ``chunk_delay_ms`` separates
    chunk events, ``fault`` is injected with probability ``fault_rate`` using a
    ``random.Random(seed)``; ``seed`` also varies the reply texts.
    """

    latency_ms: float = 0.0
    chunk_count: int = 3
    chunk_delay_ms: float = 0.0
    fault: Fault | None = None
    fault_rate: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Normalise ints to floats so to_json() is the same whichever way a value came in;
        # object.__setattr__ because the dataclass is frozen.
        set_ = object.__setattr__
        set_(self, "latency_ms", _number("latency_ms", self.latency_ms, low=0, high=600_000))
        _integer("chunk_count", self.chunk_count, low=1, high=10_000)
        delay = _number("chunk_delay_ms", self.chunk_delay_ms, low=0, high=600_000)
        set_(self, "chunk_delay_ms", delay)
        if self.fault is not None and not is_fault(self.fault):
            raise ValueError(f"unknown fault {self.fault!r}")
        set_(self, "fault_rate", _number("fault_rate", self.fault_rate, low=0, high=1))
        _integer("seed", self.seed, low=-(2**63), high=2**63 - 1)

    def updated(self, changes: Mapping[str, object]) -> EmulatorConfig:
        """A copy with ``changes`` applied; ``ValueError`` on an unknown key or a bad value."""
        names = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        values: dict[str, Any] = {**self.to_json(), **changes}
        return EmulatorConfig(**values)

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (the body of ``GET /_emulator/config``)."""
        return dataclasses.asdict(self)
