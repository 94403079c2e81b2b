"""The Bedrock emulator's run-time options, validated the same way from kwargs and JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.local.emulators.faults import Fault

# The one tool that turns a pydantic error into a line, shared with the parity suite's files.
from shared.schema_errors import explain_error, first_error

__all__ = ["EmulatorConfig"]

_Milliseconds = Annotated[float, Field(ge=0, le=600_000, allow_inf_nan=False)]


class EmulatorConfig(BaseModel):
    """Latency, chunking and fault injection of the Bedrock Agent Runtime emulator.

    ``latency_ms`` delays the answer (status line included), ``chunk_delay_ms`` separates
    chunk events, ``fault`` is injected with probability ``fault_rate`` using a
    ``random.Random(seed)``; ``seed`` also varies the reply texts.

    Strict: ``True`` as a latency or ``"3"`` as a chunk count is a caller's mistake, not a
    value; an int where a float is due is a float (so ``to_json()`` is the same whichever
    way a value came in).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    latency_ms: _Milliseconds = 0.0
    chunk_count: Annotated[int, Field(ge=1, le=10_000)] = 3
    chunk_delay_ms: _Milliseconds = 0.0
    fault: Fault | None = None
    fault_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 1.0
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] = 0

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> EmulatorConfig:
        """The options given (the rest at their defaults); ``ValueError`` with one line
        naming the option on an unknown one or a bad value."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            where, problem = explain_error(first_error(exc), cls)
            raise ValueError(f"{where}: {problem}" if where else problem) from None

    def updated(self, changes: Mapping[str, object]) -> EmulatorConfig:
        """A copy with ``changes`` applied; ``ValueError`` on an unknown key or a bad value."""
        return self.from_options({**self.to_json(), **changes})

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (the body of ``GET /_emulator/config``)."""
        return self.model_dump()
