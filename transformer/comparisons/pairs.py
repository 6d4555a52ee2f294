"""Every pairwise comparison of a comparison's cells, per (task, metric), with the family's
multiplicity control: what comparison.md's difference tables and comparison_pairs.csv hold.

For each pair (cell, other) the difference cell - other pairs the runs that share a pretraining
and a fine-tuning seed; per pretraining seed the differences of its fine-tuning runs are
averaged (nested seeds, stats.nested_means), and over those:
  mean and 95% Student-t interval (clipped to +-the metric's range for a bounded metric)
  d_z        Cohen's paired effect size, the mean over the standard deviation
  p          the paired t-test's two-sided p-value
  p_holm     Holm-adjusted and ...
  p_bh       ... Benjamini-Hochberg-adjusted over the family: every comparison of the table
             (all pairs, every task and metric) that has a p-value
  boot       a 95% percentile interval from stats.bootstrap_difference, 2,000 replicates with a
             seed fixed per comparison; `resampled` says what it drew:
               'seeds+examples'           pretraining seeds, fine-tuning seeds, and eval examples
                                          (the same examples for both cells: the runs' decodes
                                          hold the same examples, by 'id' or in the same order
                                          with the same references)
               'seeds+examples unpaired'  the same, each cell's examples drawn on its own where
                                          the two cells were scored on different examples
               'seeds'                    seeds only: no per-example scores (BLEU is a corpus
                                          score, eval loss and head accuracy come as one number)
The mark: '*' p < 0.05 unadjusted, '*†' also after Benjamini-Hochberg (false discovery rate
5%), '**' also after Holm (family-wise error 5%; Holm's adjusted p is never below BH's, so '**'
implies '†'). Two cells whose every run scores the metric's floor are 'both at floor' (no test).
"""

import dataclasses
import math

from transformer.comparisons import stats
from transformer.data.stdlib_corpus import stable_hash

REPLICATES = 2000
LEGEND = ('Marks: * p < 0.05 unadjusted (paired t over pretraining seeds); *† also after '
          'Benjamini-Hochberg (FDR 5%); ** also after Holm (family-wise 5%), each over the {m} '
          'comparisons of this table that have a p-value; dz: mean difference / SD of the '
          'differences')


@dataclasses.dataclass
class Comparison:
  """cell - other on one (task, metric)."""
  task: str
  metric: str
  cell: str
  other: str
  interval: stats.Interval
  runs: int = 0
  d_z: float = math.nan
  p: float = math.nan
  p_holm: float = math.nan
  p_bh: float = math.nan
  boot: tuple = (math.nan, math.nan)
  resampled: str = ''
  note: str = ''

  @property
  def mark(self):
    if not self.p < stats.ALPHA:
      return ''
    if self.p_holm < stats.ALPHA:
      return '**'
    return '*†' if self.p_bh < stats.ALPHA else '*'


def ordered_cells(plan):
  """The baseline first, then the other cells in declaration order."""
  return [plan.baseline] + [c for c in plan.cells if c != plan.baseline]


def pairs_of(plan):
  """(cell, other) for every pair: each cell against every cell before it (the baseline first)."""
  cells = ordered_cells(plan)
  return [(cells[j], cells[i]) for i in range(len(cells)) for j in range(i + 1, len(cells))]


def _matched(runs, others):
  """{pretrain seed: [(run, other run) with the same fine-tuning seed]}."""
  by_seed = {(r.pretrain_seed, r.finetune_seed): r for r in others}
  out = {}
  for run in runs:
    other = by_seed.get((run.pretrain_seed, run.finetune_seed))
    if other is not None:
      out.setdefault(run.pretrain_seed, []).append((run, other))
  return out


def _terms(a, b):
  """The bootstrap terms of one run pair from its per-example scores ((keys, scores) each), and
  whether the examples are shared."""
  (keys_a, scores_a), (keys_b, scores_b) = a, b
  if keys_a == keys_b:
    return [(scores_a - scores_b, 1)], True
  if keys_a and keys_b and sorted(keys_a) == sorted(keys_b) and len(set(keys_a)) == len(keys_a):
    order = {k: i for i, k in enumerate(keys_b)}
    return [(scores_a - scores_b[[order[k] for k in keys_a]], 1)], True
  return [(scores_a, 1), (scores_b, -1)], False


def _bootstrap(task, metric, cell, other, matched):
  """(low, high) and what was resampled, from the matched run pairs with values."""
  with_examples = all(a.examples.get(metric) is not None and b.examples.get(metric) is not None
                      for pairs in matched.values() for a, b in pairs)
  groups, shared = [], True
  for seed in sorted(matched):
    group = []
    for a, b in matched[seed]:
      if with_examples:
        terms, same = _terms(a.examples[metric], b.examples[metric])
        shared = shared and same
      else:
        terms = [([a.values[metric] - b.values[metric]], 1)]
      group.append(terms)
    groups.append(group)
  seed = stable_hash(f'{task}/{metric}/{cell}/{other}')
  boot = stats.bootstrap_difference(groups, REPLICATES, seed=seed)
  kind = 'seeds' if not with_examples else 'seeds+examples' + ('' if shared else ' unpaired')
  return boot, kind


def compare(task, metric, cell, other, runs, other_runs):
  """The Comparison cell - other from the two cells' RunScores (p-values not yet adjusted)."""
  complete = lambda r: r.values.get(metric) is not None
  matched = _matched([r for r in runs if complete(r)], [r for r in other_runs if complete(r)])
  diffs = stats.nested_means({s: [a.values[metric] - b.values[metric] for a, b in pairs]
                              for s, pairs in matched.items()})
  out = Comparison(task, metric, cell, other,
                   stats.mean_interval(diffs, bounds=stats.difference_bounds(metric)),
                   runs=sum(map(len, matched.values())))
  values = lambda rs: [r.values.get(metric) for r in rs]
  if stats.at_floor(metric, values(runs)) and stats.at_floor(metric, values(other_runs)):
    out.note = 'both at floor'
    return out
  if not diffs:
    return out
  out.d_z, out.p = stats.cohen_dz(diffs), stats.t_test(diffs)
  if len(diffs) > 1 and math.isnan(out.p):
    out.note = 'no spread: no t-test'
  out.boot, out.resampled = _bootstrap(task, metric, cell, other, matched)
  return out


def compare_all(plan, collected):
  """Every Comparison of the table (skipped (task, cell)s left out), adjusted as one family."""
  out = []
  for task, spec in plan.tasks.items():
    for metric in spec.metrics:
      for cell, other in pairs_of(plan):
        if (task, cell) in plan.skipped or (task, other) in plan.skipped:
          continue
        runs, other_runs = collected['runs'].get((task, cell)), collected['runs'].get(
            (task, other))
        if runs is not None and other_runs is not None:
          out.append(compare(task, metric, cell, other, runs, other_runs))
  for c, holm, bh in zip(out, stats.holm([c.p for c in out]),
                         stats.benjamini_hochberg([c.p for c in out])):
    c.p_holm, c.p_bh = holm, bh
  return out


def family_size(comparisons):
  return sum(not math.isnan(c.p) for c in comparisons)


def _signed(x):
  return f'{x:+.2f}'


def difference_text(c):
  """'+0.07 [+0.04, +0.09] dz +2.9 **', 'both at floor', '+0.50' (one seed), '' (none); a
  difference that does not vary over seeds has no test: '+1.00 [+1.00, +1.00] (no spread)'."""
  if c.note == 'both at floor':
    return c.note
  if not c.interval.n:
    return ''
  if math.isnan(c.interval.low):
    return _signed(c.interval.mean)
  dz = '' if math.isnan(c.d_z) or math.isinf(c.d_z) else f' dz {c.d_z:+.1f}'
  tail = ' (no spread)' if c.note.startswith('no spread') else f'{dz} {c.mark}'.rstrip()
  return (f'{_signed(c.interval.mean)} [{_signed(c.interval.low)}, {_signed(c.interval.high)}]'
          f'{tail}')


def bootstrap_text(c):
  """'[+0.01, +0.12] s+e' (seeds and examples), '... s' (seeds only) or ''."""
  if c.note == 'both at floor' or math.isnan(c.boot[0]) or c.interval.n < 2:
    return c.note if c.note == 'both at floor' else ''
  kind = {'seeds': 's', 'seeds+examples': 's+e', 'seeds+examples unpaired': 's+e unpaired'}
  return f'[{_signed(c.boot[0])}, {_signed(c.boot[1])}] {kind[c.resampled]}'


def markdown(plan, comparisons, columns, names, skipped_text):
  """The two difference tables of comparison.md: t intervals with marks, then the bootstraps."""
  found = {(c.task, c.metric, c.cell, c.other): c for c in comparisons}

  def table(text):
    lines = ['| cell - other | ' + ' | '.join(names) + ' |', '|' + '---|' * (len(names) + 1)]
    for cell, other in pairs_of(plan):
      entries = []
      for task, metric in columns:
        c = found.get((task, metric, cell, other))
        entries.append(skipped_text(task, cell, other) if c is None else text(c))
      lines.append(f'| {cell} - {other} | ' + ' | '.join(entries) + ' |')
    return lines

  m = family_size(comparisons)
  return (['Differences between cells (cell - other, runs paired by seed; mean [95% t interval]'
           ' over pretraining seeds):', ''] + table(difference_text) +
          ['', LEGEND.format(m=m) + '.', '',
           f'Paired bootstrap of the same differences ({REPLICATES} replicates, 95% percentile '
           'interval; s+e: seeds and eval examples resampled, s: seeds only, unpaired: the two '
           'cells scored different examples, each drawn on its own):', ''] +
          table(bootstrap_text))


PAIR_FIELDS = ['task', 'metric', 'cell', 'other', 'n', 'runs', 'diff_mean', 'diff_low',
               'diff_high', 'd_z', 'p_raw', 'p_holm', 'p_bh', 'mark', 'boot_low', 'boot_high',
               'resampled', 'note']


def csv_row(c):
  """One comparison_pairs.csv row (diff = cell - other)."""
  return {'task': c.task, 'metric': c.metric, 'cell': c.cell, 'other': c.other,
          'n': c.interval.n, 'runs': c.runs, 'diff_mean': c.interval.mean,
          'diff_low': c.interval.low, 'diff_high': c.interval.high, 'd_z': c.d_z, 'p_raw': c.p,
          'p_holm': c.p_holm, 'p_bh': c.p_bh, 'mark': c.mark, 'boot_low': c.boot[0],
          'boot_high': c.boot[1], 'resampled': c.resampled, 'note': c.note}
