"""Scaling, not a point: a cell run at several sizes gets a fit of its score against compute.

Rankings of architectures flip with scale (Tay et al. 2022, "Scaling Laws vs Model
Architectures"), so one size says little. A declaration lists model sizes per scale
(`SIZES = {scale: {size: overrides}}`) and a cell the sizes it also runs at (`'sizes': ('xs',
'm')`): the cell then has one row per size (`<cell>@<size>`; the cell's own row is its default
size), each pretrained at the steps that spend the baseline's budget at that size (so compute
grows with the size) and fine-tuned and scored like any row.

Per cell with 2 or more sizes and per (task, metric) the fit is ordinary least squares of the
score on log10(pretraining FLOPs) over every run (all seeds; scipy.stats.linregress):
  slope         the change of the score per 10x compute, with its 95% Student-t interval
                (n - 2 degrees of freedom; none with 2 points, which a line passes through)
  multiplier    the compute-equivalent multiplier against the baseline's fit: the baseline
                compute that reaches the cell's fitted score at the cell's default size, divided
                by the cell's compute there. 2.0x: the cell does what the baseline does with
                twice the compute; 0.5x: it needs twice the baseline's. It is read off the two
                fitted lines (extrapolated where the score lies outside the baseline's range),
                so it is a summary of the fits, not a measurement, and has no interval here;
                "(extrapolated)" where the baseline's line is read outside the computes it
                was fitted on, and none where the baseline's own slope interval holds 0
                (a flat line cannot say what compute matches a score).
"""

import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats

SEP = '@'


def split(cell):
  """('encdec', 'xs') for 'encdec@xs'; (cell, '') for a cell's default size."""
  base, _, size = cell.partition(SEP)
  return base, size


@dataclasses.dataclass(frozen=True)
class Fit:
  """score = intercept + slope * log10(FLOPs) over n runs at `sizes` distinct computes."""
  intercept: float
  slope: float
  slope_low: float
  slope_high: float
  n: int
  sizes: int
  low_x: float = math.nan     # the fitted range of log10 FLOPs
  high_x: float = math.nan

  def changes(self):
    """Whether the score moves with compute: the slope's interval excludes 0."""
    return self.slope_low > 0 or self.slope_high < 0

  def at(self, log_flops):
    return self.intercept + self.slope * log_flops

  def text(self):
    if math.isnan(self.slope_low):
      return f'{self.slope:+.3g} per 10x ({self.sizes} sizes, no interval)'
    return (f'{self.slope:+.3g} [{self.slope_low:+.3g}, {self.slope_high:+.3g}] per 10x '
            f'({self.sizes} sizes, {self.n} runs)')


def fit(points, confidence=0.95):
  """The Fit of [(flops, score)] (None without 2 distinct computes)."""
  points = [(math.log10(f), s) for f, s in points if f and s is not None and math.isfinite(s)]
  sizes = len({x for x, _ in points})
  if sizes < 2:
    return None
  x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
  result = scipy_stats.linregress(x, y)
  n = len(points)
  if n > 2:
    t = scipy_stats.t.ppf((1 + confidence) / 2, n - 2)
    low, high = result.slope - t * result.stderr, result.slope + t * result.stderr
  else:
    low = high = math.nan
  return Fit(float(result.intercept), float(result.slope), float(low), float(high), n, sizes,
             float(x.min()), float(x.max()))


def multiplier(cell_fit, baseline_fit, log_flops):
  """(baseline compute reaching the cell's fitted score at 10^log_flops, over 10^log_flops;
  whether that compute lies outside the baseline's fitted range), or None when a fit is missing
  or the baseline's score does not move with compute (its slope's interval holds 0)."""
  if cell_fit is None or baseline_fit is None or not baseline_fit.changes():
    return None
  needed = (cell_fit.at(log_flops) - baseline_fit.intercept) / baseline_fit.slope
  outside = not baseline_fit.low_x <= needed <= baseline_fit.high_x
  return 10 ** (needed - log_flops), outside


def fits(plan, collected, metrics):
  """{(task, metric, cell): Fit} for every cell run at 2+ sizes, from its runs' scores and
  their rows' pretraining FLOPs."""
  by_cell = {}
  for (task, row_cell), runs in collected['runs'].items():
    base, _ = split(row_cell)
    flops = plan.budget[row_cell]['train_flops']
    for metric in metrics.get(task, ()):
      by_cell.setdefault((task, metric, base), []).extend(
          (flops, r.values.get(metric)) for r in runs)
  return {key: f for key, points in by_cell.items() if (f := fit(points)) is not None}


def markdown(plan, collected, labels):
  """The scaling section of comparison.md ([] without a cell at 2+ sizes)."""
  metrics = {t: task.metrics for t, task in plan.tasks.items()}
  found = fits(plan, collected, metrics)
  if not found:
    return []
  lines = ['', 'Scaling: each score fitted against log10(pretraining FLOPs) over every run of '
           'the cell\'s sizes (least squares; slope per 10x compute with its 95% t interval). '
           f'"x baseline compute": the compute {plan.baseline}\'s fit needs to reach the cell\'s '
           'fitted score at its default size, over the cell\'s compute there (from the fitted '
           'lines, no interval; "extrapolated" outside the baseline\'s computes; none where the '
           'baseline\'s slope interval holds 0; scaling.py).', '',
           '| cell | task | metric | slope | x baseline compute |', '|---|---|---|---|---|']
  for (task, metric, cell), f in sorted(found.items()):
    base_fit = found.get((task, metric, plan.baseline))
    flops = plan.budget.get(cell, {}).get('train_flops')
    m = None if cell == plan.baseline or not flops else multiplier(f, base_fit,
                                                                    math.log10(flops))
    if cell == plan.baseline:
      said = '1 (baseline)'
    elif m is None:
      said = 'n/a (baseline flat)' if base_fit is not None and not base_fit.changes() else ''
    else:
      said = f'{m[0]:.3g}x' + (' (extrapolated)' if m[1] else '')
    lines.append(f'| {cell} | {task} | {labels.get(metric, metric)} | {f.text()} | {said} |')
  return lines
