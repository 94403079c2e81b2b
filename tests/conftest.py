"""Root fixtures: settings, and resets of the global state tests may touch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import structlog

from harness.local.emulators import LocalEmulators
from shared.settings import Settings


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the test, never from the machine's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    # Each app factory configures structlog globally (level included): start every test
    # from the defaults so one test's configuration cannot filter another's logs.
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def build_settings(**overrides: object) -> Settings:
    """Settings for tests, whatever the machine's environment: no agent retries, so faults
    surface at once, and quiet logs."""
    values: dict[str, object] = {
        "agent_max_attempts": 1,
        "agent_timeout_seconds": 5.0,
        "store_max_attempts": 2,
        "store_timeout_seconds": 5.0,
        "log_level": "WARNING",
    }
    values.update(overrides)
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name.upper(), raising=False)
        return Settings.model_validate(values)


@pytest.fixture(scope="session")
def make_settings() -> Callable[..., Settings]:
    """`make_settings(**overrides)`: test settings with some fields changed."""
    return build_settings


@pytest.fixture
def settings() -> Settings:
    return build_settings()


@pytest.fixture(scope="session")
def emulators() -> Iterator[LocalEmulators]:
    """DynamoDB (moto) and the Bedrock emulator on free loopback ports, for the session."""
    with LocalEmulators() as running:
        yield running
