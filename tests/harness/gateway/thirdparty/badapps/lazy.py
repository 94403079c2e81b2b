"""A module whose app is built on first access (as `gateway:app` is) and fails then."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        raise RuntimeError("cannot reach the config service")
    raise AttributeError(name)
