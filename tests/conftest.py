"""Root fixtures: settings, and resets of the global state tests may touch."""

from __future__ import annotations

import os
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


TEST_SETTINGS: dict[str, object] = {
    "agent_max_attempts": 1,
    "agent_timeout_seconds": 5.0,
    "store_max_attempts": 2,
    "store_timeout_seconds": 5.0,
    "log_level": "WARNING",
}
"""The stacks' settings in tests: no agent retries, so faults surface at once, and quiet
logs (`build_settings`, and the environment of stacks run as processes)."""


def build_settings(**overrides: object) -> Settings:
    """Settings for tests, whatever the machine's environment (`TEST_SETTINGS`)."""
    values: dict[str, object] = {**TEST_SETTINGS, **overrides}
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


TEST_DYNAMODB = "DUALSTACK_TEST_DYNAMODB"
"""Names the DynamoDB the `emulators` fixture starts: moto (default) or dynalite."""


def _test_dynamodb() -> str:
    return os.environ.get(TEST_DYNAMODB) or "moto"


def pytest_report_header() -> str:
    return f"DynamoDB of the emulators fixture: {_test_dynamodb()} (${TEST_DYNAMODB})"


@pytest.fixture(scope="session")
def emulators() -> Iterator[LocalEmulators]:
    """DynamoDB and the Bedrock emulator on free loopback ports, for the session. The store
    is moto unless `$DUALSTACK_TEST_DYNAMODB` says dynalite (`make test` runs tests/stacks
    once more so where Node is; dynalite must be installed beforehand, as make does: a test
    run never downloads it)."""
    with LocalEmulators(dynamodb=_test_dynamodb()) as running:
        yield running
