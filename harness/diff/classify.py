"""Classing differences: `diff` compares two responses and reclasses each difference by the
parity rules (ignored, volatile, expected) and by the noise check (paths at which two legacy
responses to the same request differed are "noise": reported, never dropped).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from harness.diff.compare import DEFAULT_HEADERS, compare
from harness.diff.model import NOISE_REASON, Difference, Kind, Response
from harness.diff.rules import Rules, RuleUsage

NOISY_KINDS: frozenset[Kind] = frozenset({"value", "order", "header_value", "body"})
"""The kinds of difference noise can explain: another value (or order) at a path whose value
varies per call. A field dropped or added, a type or a status changed are never noise: two
legacy answers with different values there do not make a candidate without the field right."""


def _is_noisy(difference: Difference, noisy: tuple[str, ...]) -> bool:
    # A noisy path covers what lies below it: when the legacy answers disagree on `$.a` as a
    # whole, whatever value the candidate has inside `$.a` cannot be told from that noise.
    path = difference.path
    return difference.kind in NOISY_KINDS and any(
        path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")
        for prefix in noisy
    )


def diff(
    legacy: Response,
    candidate: Response,
    *,
    headers: Iterable[str] = DEFAULT_HEADERS,
    rules: Rules | None = None,
    noise: Iterable[str] = (),
    now: float | None = None,
    endpoint: str | None = None,
    usage: RuleUsage | None = None,
) -> list[Difference]:
    """Every difference between `legacy` and `candidate`: status, then `headers` in the
    order given, then the body. An empty list means a client could not tell them apart.

    `rules` reclass differences (first an ignore rule, then a volatile one, then an expected
    one, `endpoint` such as "GET /health" scoping the last), recording matches in `usage`;
    `now` (epoch seconds, the clock when None) is what volatile timestamps must be close to.
    A difference no rule decided, at or below one of the `noise` paths (from `noisy_paths`),
    is classed "noise" when it is of a kind in `NOISY_KINDS` (another value, order, header
    value or non-JSON body); a missing or added field, a type or status change keeps its
    severity. A list whose elements differ only in ignored or volatile fields and
    in their order is one `order` difference, as if those fields were equal.
    """
    noisy = tuple(noise)
    classed: list[Difference] = []
    mask = rules.masks if rules is not None else None
    for difference in compare(legacy, candidate, headers, mask):
        verdict = None
        if rules is not None:
            verdict = rules.match(difference, endpoint, now=now, usage=usage)
        if verdict is not None:
            severity, reason = verdict
            difference = replace(difference, severity=severity, reason=reason)
        elif _is_noisy(difference, noisy):
            difference = replace(difference, severity="noise", reason=NOISE_REASON)
        classed.append(difference)
    return classed
