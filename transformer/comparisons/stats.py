"""Statistics over seeds: a mean with its Student-t confidence interval, and a paired comparison.

  mean_interval([31.2, 29.8, 30.5])         -> Interval(mean=30.5, low=28.76, high=32.24, n=3)
  paired([31.2, 29.8, 30.5], [28.0, 28.9, 27.1]) -> the interval of the per-seed differences

Runs of one cell differ by their seed; a comparison of two cells pairs the runs that share a
seed (same data order and fine-tuning draws) and reports the mean difference with the interval
of the differences (a paired t-test's interval), which is narrower than two separate intervals
when the seeds move both cells alike. With one value the interval is unknown (low = high = nan).
"""

import dataclasses
import math

from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class Interval:
  """mean and the two-sided `confidence` interval [low, high] of n values."""
  mean: float
  low: float
  high: float
  n: int

  @property
  def half_width(self):
    return (self.high - self.low) / 2

  def excludes_zero(self):
    """Whether the interval lies entirely on one side of 0 (the difference is 'significant')."""
    return self.n > 1 and (self.low > 0 or self.high < 0)

  def text(self, digits=3):
    """'30.50 ± 1.74' (or '30.50' for one value, '' for none)."""
    if not self.n:
      return ''
    fmt = lambda v: f'{v:.{digits}g}' if abs(v) >= 10 ** digits else f'{v:.{digits - 1}f}'
    if math.isnan(self.low):
      return fmt(self.mean)
    return f'{fmt(self.mean)} ± {fmt(self.half_width)}'


def mean_interval(values, confidence=0.95):
  """The mean of `values` and its Student-t interval: mean ± t_{(1+c)/2, n-1} * s / sqrt(n),
  s the sample standard deviation (n - 1 in the denominator)."""
  values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
  n = len(values)
  if n == 0:
    return Interval(math.nan, math.nan, math.nan, 0)
  mean = sum(values) / n
  if n == 1:
    return Interval(mean, math.nan, math.nan, 1)
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
  return Interval(mean, mean - half, mean + half, n)


def paired(values, baseline, confidence=0.95):
  """The interval of values[i] - baseline[i] over the pairs where both exist."""
  diffs = [a - b for a, b in zip(values, baseline) if a is not None and b is not None]
  return mean_interval(diffs, confidence)
