"""The benchmark helpers' own arithmetic (the benchmarks themselves are scripts, not tests)."""

from __future__ import annotations

import math

import pytest

from bench.stats import count_in, max_in_window, percentile, ratio, summary


def test_percentile_interpolates_like_numpy_linear():
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile(values, 40)
    assert percentile(values, 99) == pytest.approx(49.6)


def test_percentile_of_one_value_and_of_none():
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_percentile_ignores_input_order():
    assert percentile([3, 1, 2], 50) == 2


def test_p99_of_a_hundred_values_sits_near_the_top():
    values = list(range(1, 101))
    assert percentile(values, 99) == pytest.approx(99.01)
    assert summary(values)["max"] == 100
    assert summary(values)["n"] == 100


def test_ratio_guards_against_a_missing_baseline():
    assert ratio(50, 100) == 0.5
    assert math.isnan(ratio(1, 0))
    assert math.isnan(ratio(1, math.nan))


def test_count_in_is_half_open():
    assert count_in([0, 1, 9.99, 10, 11], 0, 10) == 3


def test_max_in_window_slides():
    # 3 calls at 0..0.2, 3 more at 10.1..10.3: never more than 3 in any 10 s stretch.
    times = [0, 0.1, 0.2, 10.1, 10.2, 10.3]
    assert max_in_window(times, 10) == 3
    assert max_in_window(times, 10.5) == 6
    assert max_in_window([], 10) == 0
