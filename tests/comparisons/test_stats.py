"""The seed statistics against numbers worked out by hand (t table: t_{0.975, 2} = 4.302653)."""

import math

import pytest

from transformer.comparisons import stats


def test_mean_interval_matches_a_hand_computed_example():
  # mean 30.5; deviations 0.7, -0.7, 0 -> s = sqrt(0.98 / 2) = 0.7; se = 0.7 / sqrt(3) = 0.404145
  # half width = 4.302653 * 0.404145 = 1.738896
  got = stats.mean_interval([31.2, 29.8, 30.5])
  assert got.n == 3 and got.mean == pytest.approx(30.5)
  assert got.low == pytest.approx(28.761104, abs=1e-5)
  assert got.high == pytest.approx(32.238896, abs=1e-5)
  assert got.text() == '30.50 ± 1.74'
  assert not got.excludes_zero() or got.low > 0


def test_paired_comparison_matches_a_hand_computed_example():
  # differences 3.2, 0.9, 3.4: mean 2.5; deviations 0.7, -1.6, 0.9 -> s^2 = 3.86 / 2 = 1.93
  # se = sqrt(1.93 / 3) = 0.802081; half width = 4.302653 * 0.802081 = 3.451077
  got = stats.paired([31.2, 29.8, 30.5], [28.0, 28.9, 27.1])
  assert got.mean == pytest.approx(2.5)
  assert (got.low, got.high) == (pytest.approx(-0.951077, abs=1e-5),
                                 pytest.approx(5.951077, abs=1e-5))
  assert not got.excludes_zero()   # 2.5 better on average, but 3 seeds cannot tell
  clear = stats.paired([3.0, 3.1, 2.9], [1.0, 1.05, 0.95])   # differences 2, 2.05, 1.95
  assert clear.excludes_zero() and clear.low > 1.5


def test_two_values_use_t_with_one_degree_of_freedom_and_one_value_has_no_interval():
  got = stats.mean_interval([1.0, 3.0])   # s = sqrt(2), se = 1, t_{0.975, 1} = 12.706205
  assert got.half_width == pytest.approx(12.706205, abs=1e-5)
  one = stats.mean_interval([2.0, None])
  assert one.n == 1 and one.mean == 2.0 and math.isnan(one.low) and one.text() == '2.00'
  assert stats.mean_interval([]).n == 0 and stats.mean_interval([]).text() == ''
  assert stats.paired([1.0, None, 3.0], [0.5, 2.0, None]).n == 1   # only complete pairs
