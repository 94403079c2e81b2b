"""Each corpus case as its own test: the stacks must answer it alike, up to the rules; then
every rule must have been needed by some case."""

from __future__ import annotations

import pytest

from harness.diff import Rules, RuleUsage
from parity_tests.cases import Case, load_corpus
from parity_tests.runner import CaseResult, Sender, render, run_case

CASES = load_corpus()


@pytest.fixture(scope="session")
def usage() -> RuleUsage:
    """Which rules the session's case runs used."""
    return RuleUsage()


@pytest.fixture(scope="session")
def results() -> dict[str, CaseResult]:
    """The session's case results by case id."""
    return {}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case_has_parity(
    case: Case,
    parity_sender: Sender,
    parity_rules: Rules,
    usage: RuleUsage,
    results: dict[str, CaseResult],
) -> None:
    result = run_case(case, parity_sender, parity_rules, usage=usage)
    results[case.id] = result
    assert not result.failed, render(result)


def test_every_rule_is_used_by_the_corpus(
    parity_sender: Sender,
    parity_rules: Rules,
    usage: RuleUsage,
    results: dict[str, CaseResult],
) -> None:
    # Cases deselected from this session (-k) are run here, so the answer is the same
    # however the tests are selected.
    for case in CASES:
        if case.id not in results:
            results[case.id] = run_case(case, parity_sender, parity_rules, usage=usage)
    assert usage.stale(parity_rules) == []
