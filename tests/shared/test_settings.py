"""Settings read from the environment under their names."""

from __future__ import annotations

import pytest

from shared.settings import Settings


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({}, None), ({"ENVIRONMENT": "local"}, "local"), ({"environment": "staging"}, "staging")],
)
def test_the_environment_variable_names_the_environment(
    variables: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert Settings().environment == expected
