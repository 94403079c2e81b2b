"""`pytest parity_tests`: one emulator set and one pair of stacks for the whole session,
shared by every corpus case."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.diff import Rules
from parity_tests.cli import DEFAULT_RULES
from parity_tests.runner import Sender
from parity_tests.targets import serve_in_process
from parity_tests.yaml_files import load_rules


@pytest.fixture(scope="session")
def parity_rules() -> Rules:
    """The default rules file."""
    return load_rules(DEFAULT_RULES)


@pytest.fixture(scope="session")
def parity_sender() -> Iterator[Sender]:
    """Both shipped stacks in-process, against emulators of their own."""
    with serve_in_process() as targets, Sender(targets) as sender:
        yield sender
