"""The one percentile of the project: linear interpolation between closest ranks.

Every report and figure (the parity suite's p50/p95, the load test's p50/p90/p99, the
charts' boxes) reads percentiles from here, so two tools never disagree on what "p95" means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(samples: Iterable[float], fraction: float) -> float | None:
    """The `fraction` (0 to 1, both included) percentile of `samples`, in any order, by
    linear interpolation between the closest ranks; None when there are no samples.

    Fraction 0 is the minimum, 1 the maximum, and a larger fraction never gives a smaller
    value. The samples are sorted here: sorting a list already in order takes linear time,
    so callers that ask for several percentiles of one list may sort it once first.
    ValueError for a fraction outside 0..1 (95 instead of 0.95 is a bug, not a request).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0 and 1, not {fraction!r}")
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
