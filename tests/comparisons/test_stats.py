"""The seed statistics against numbers worked out by hand (t table: t_{0.975, 2} = 4.302653)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

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


# -- multiplicity, effect sizes, bounds, floors, bootstrap (issue 23) -------------------------
def test_holm_and_benjamini_hochberg_match_a_hand_computed_example():
  # p = (0.01, 0.04, 0.03, 0.005), m = 4; sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1).
  # Holm: (m - rank + 1) p, then running max from the smallest:
  #   4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, 1 * 0.04 = 0.04 -> max so far 0.06
  #   -> #0 0.03, #1 0.06, #2 0.06, #3 0.02: two of the four stay below 0.05.
  # BH: p * m / rank, then running min from the largest:
  #   0.005 * 4 / 1 = 0.02, 0.01 * 4 / 2 = 0.02, 0.03 * 4 / 3 = 0.04, 0.04 * 4 / 4 = 0.04
  #   -> #0 0.02, #1 0.04, #2 0.04, #3 0.02: all four stay below 0.05.
  p = [0.01, 0.04, 0.03, 0.005]
  assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
  # a comparison without a p-value is not part of the family: m stays 4
  holm = stats.holm([0.01, math.nan, 0.04, 0.03, 0.005])
  assert math.isnan(holm[1]) and holm[:1] + holm[2:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
  bh = stats.benjamini_hochberg([math.nan, 0.01, 0.04, 0.03, 0.005])
  assert math.isnan(bh[0]) and bh[1:] == pytest.approx([0.02, 0.04, 0.04, 0.02])
  assert stats.holm([0.6, 0.5]) == [1.0, 1.0]   # capped at 1


def test_t_test_and_effect_size_of_the_paired_example():
  # differences 3.2, 0.9, 3.4 (test_paired_...): mean 2.5, sd sqrt(1.93) = 1.389244
  # d_z = 2.5 / 1.389244 = 1.799540; t = 2.5 / 0.802081 = 3.116893 on 2 df
  diffs = [3.2, 0.9, 3.4]
  assert stats.cohen_dz(diffs) == pytest.approx(1.799540, abs=1e-5)
  p = stats.t_test(diffs)
  assert p == pytest.approx(2 * scipy_stats.t.sf(3.116893, 2), abs=1e-6)
  assert 0.05 < p < 0.1   # agrees with the 95% interval [-0.95, 5.95], which holds 0
  assert stats.t_test([2.0, 2.05, 1.95]) < 0.05   # test_paired_...'s clear case
  assert math.isnan(stats.t_test([2.0, 2.0, 2.0])) and math.isnan(stats.t_test([1.0]))
  assert stats.cohen_dz([2.0, 2.0]) == math.inf and math.isnan(stats.cohen_dz([0.0, 0.0]))


def test_bounded_metrics_get_intervals_inside_their_range():
  bleu = stats.mean_interval([0.0, 0.2, 0.5], bounds=stats.bounds_of('bleu'))
  unbounded = stats.mean_interval([0.0, 0.2, 0.5])
  assert unbounded.low < 0 and bleu.low == 0.0 and bleu.high == unbounded.high
  assert bleu.clipped and bleu.mean == pytest.approx(0.7 / 3)
  assert bleu.text() == '0.23 [0.00, 0.86]'
  top = stats.mean_interval([99.0, 100.0, 100.0], bounds=stats.bounds_of('accuracy'))
  assert top.high == 100.0 and top.low > 95
  inside = stats.mean_interval([31.2, 29.8, 30.5], bounds=stats.bounds_of('bleu'))
  assert not inside.clipped and inside.text() == '30.50 ± 1.74'
  diff = stats.paired([100.0, 0.0, 100.0], [0.0, 100.0, 0.0],
                      bounds=stats.difference_bounds('exact_match'))
  assert (diff.low, diff.high) == (-100.0, 100.0)
  assert stats.bounds_of('loss') == (0.0, math.inf) and stats.bounds_of('rouge') is None


def test_floors_are_recognised_only_for_metrics_that_have_one():
  assert stats.at_floor('bleu', [0.0, 0.0, None]) and stats.at_floor('exact_match', [0.0])
  assert not stats.at_floor('bleu', [0.0, 0.1, 0.0]) and not stats.at_floor('bleu', [])
  assert not stats.at_floor('loss', [0.0, 0.0])


def test_nested_seeds_average_fine_tuning_runs_within_each_pretraining_seed():
  assert stats.nested_means({1: [3.0, 5.0], 0: [1.0, None], 2: [None]}) == [1.0, 4.0]


def _synthetic(rng, seeds=5, examples=200, runs=2, truth=(0.6, 0.4)):
  """Per pretraining seed, `runs` fine-tuning runs scoring shared examples 0/1 (x100): cell a
  right with probability truth[0] + a seed effect both cells share, b with truth[1] + it."""
  groups = []
  for _ in range(seeds):
    shift = rng.normal(0, 0.05)
    group = []
    for _ in range(runs):
      a = 100.0 * (rng.random(examples) < truth[0] + shift)
      b = 100.0 * (rng.random(examples) < truth[1] + shift)
      group.append([(a - b, 1)])
    groups.append(group)
  return groups


def test_bootstrap_is_reproducible_and_covers_the_true_difference():
  groups = _synthetic(np.random.default_rng(0))
  low, high = stats.bootstrap_difference(groups, seed=7)
  assert (low, high) == stats.bootstrap_difference(groups, seed=7)
  assert (low, high) != stats.bootstrap_difference(groups, seed=8)
  assert low < 20.0 < high and high - low < 15   # the truth: 60% - 40%
  covered = 0
  for trial in range(100):
    low, high = stats.bootstrap_difference(_synthetic(np.random.default_rng(100 + trial)),
                                           replicates=500, seed=trial)
    covered += low < 20.0 < high
  assert covered >= 85   # a 95% interval: ~95 of 100


def test_bootstrap_draws_shared_examples_together_and_falls_back_to_seeds():
  a = np.array([100.0] * 30 + [0.0] * 70)
  same = [[[(a - a, 1)]], [[(a - a, 1)]]]   # shared examples, identical scores: no spread
  assert stats.bootstrap_difference(same) == (0.0, 0.0)
  unshared = [[[(a, 1), (a, -1)]], [[(a, 1), (a, -1)]]]   # drawn apart: example noise shows
  low, high = stats.bootstrap_difference(unshared)
  assert low < -5 and high > 5
  seeds_only = [[[([2.0], 1)]], [[([4.0], 1)]], [[([3.0], 1)]]]
  low, high = stats.bootstrap_difference(seeds_only)
  assert 2.0 <= low <= high <= 4.0
  assert all(math.isnan(v) for v in stats.bootstrap_difference([]))
