"""The one percentile, at its boundaries: no sample, one sample, fractions 0 and 1, ranks
hit exactly and interpolated between."""

from __future__ import annotations

import pytest

from harness.report.stats import percentile

TEN = [float(n) for n in range(1, 11)]


@pytest.mark.parametrize(
    ("samples", "fraction", "expected"),
    [
        ([], 0.0, None),
        ([], 0.5, None),
        ([], 1.0, None),
        ([7.0], 0.0, 7.0),
        ([7.0], 0.5, 7.0),
        ([7.0], 1.0, 7.0),
        ([3.0, 1.0, 2.0], 0.0, 1.0),  # the minimum, whatever the order
        ([3.0, 1.0, 2.0], 1.0, 3.0),  # the maximum
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0.25, 2.0),  # rank 1 exactly
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, 3.0),  # rank 2 exactly
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),  # half-way between ranks 1 and 2
        ([10.0, 0.0, 5.0], 0.95, 9.5),  # rank 1.9: 5 + 0.9 * (10 - 5)
        ([1.0, 2.0], 0.5, 1.5),
        ([5.0, 5.0, 5.0, 9.0], 0.5, 5.0),  # duplicates
        ([-2.0, 2.0], 0.5, 0.0),
    ],
)
def test_percentile_interpolates_between_closest_ranks(
    samples: list[float], fraction: float, expected: float | None
) -> None:
    assert percentile(samples, fraction) == expected


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.1, 1.9), (0.5, 5.5), (0.9, 9.1), (0.99, 9.91)],
)
def test_percentile_of_one_to_ten(fraction: float, expected: float) -> None:
    assert percentile(TEN, fraction) == pytest.approx(expected, abs=1e-12)


def test_a_larger_fraction_never_gives_a_smaller_value() -> None:
    samples = [0.3, 12.0, 0.9, 250.0, 1.1, 1.1, 7.5, 0.2, 3000.0, 4.0, 18.0]
    values = [percentile(samples, n / 1000) for n in range(1001)]
    assert values == sorted(values)  # type: ignore[type-var]
    assert (values[0], values[-1]) == (0.2, 3000.0)


def test_any_iterable_in_any_order_and_the_input_left_alone() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert percentile(iter(samples), 0.5) == 2.5
    assert percentile((s for s in samples), 1.0) == 4.0
    assert samples == [4.0, 1.0, 3.0, 2.0]


@pytest.mark.parametrize("fraction", [-0.01, 1.01, 50, 95.0, float("nan")])
def test_a_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be within 0 and 1"):
        percentile(TEN, fraction)
