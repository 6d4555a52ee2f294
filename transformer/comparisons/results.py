"""The results of an architecture comparison, rebuilt from the runs' event files and decodes.

Writes into <workdir>/<experiment>/:
  comparison.md        a header line naming the budget (equal FLOPs x cost, or equal steps) and
                       the FLOP convention; per cell: parameters, non-embedding parameters,
                       pretraining steps, its cost ratio, its FLOPs under every convention
                       (matmul, 6n, 6n_attn), tokens seen, wall time, and each downstream score as mean ± 95% interval over
                       pretraining seeds (Student t; a bounded metric's interval clipped to its
                       range and then printed as mean [low, high]; 'at floor' where every run
                       scored 0); then the differences between every pair of cells with raw and
                       Holm / Benjamini-Hochberg marks and d_z, and their paired bootstrap over
                       seeds and eval examples (comparisons/pairs.py says what each holds); cells
                       that cannot do a task say why
  comparison.csv       one row per (cell, task, metric): the budget columns (steps, cost,
                       train_flops under the chosen convention, flops_<convention> for each),
                       n (pretraining seeds), runs, mean,
                       interval, at_floor, the paired difference to the baseline with its raw,
                       Holm and BH p-values
  comparison_pairs.csv one row per (task, metric, cell, other): every pair, cell - other
  comparison_seeds.csv one row per (cell, task, metric, pretraining seed, fine-tuning seed): the
                       run, its status, its value and how many eval examples scored it (exact
                       match and text-to-text accuracy; blank where the score is one number),
                       so every statistic can be recomputed (the examples are in
                       <run>/decodes/step_<last>.jsonl)
  comparison.png       one panel per (task, metric): every cell's runs, mean and interval
  comparison_summary/  the same in TensorBoard: the table as text, margin charts (board.py)
"""

import csv
import dataclasses
import math
import os

import numpy as np

from transformer.comparisons import board
from transformer.comparisons import manifest
from transformer.comparisons import lr_grid
from transformer.comparisons import pairs as pairs_lib
from transformer.comparisons import scaling
from transformer.comparisons import stats
from transformer.comparisons.budget import FLOP_CONVENTIONS as FLOP_COLUMNS
from transformer.sweeps.results import read_status
from transformer.training import scoring

METRIC_LABELS = {'bleu': 'BLEU', 'exact_match': 'exact match %', 'accuracy': 'accuracy %',
                 'loss': 'eval loss (lower is better)',
                 'bits_per_byte': 'bits per byte (lower is better)'}


def _scalars(run_dir):
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  return read_events(run_dir)['scalars'] if os.path.isdir(run_dir) else {}


def _last(scalars, tag):
  points = scalars.get(tag, [])
  return points[-1][1] if points else None


def example_scores(records, metric):
  """(ids, per-example values whose mean is the run's score) of scored records, or None.

  exact_match and accuracy: 0 / 100 per example; loss: each example's summed loss x N / total
  scored tokens, so their mean is the loss per scored token (every cell scores the same tokens
  of the same ids, so paired differences are per-example differences); bits_per_byte: each
  example's loss in bits x N / total scored bytes (the same bytes whatever the tokenizer)."""
  if not records:
    return None
  ids = [str(r['id']) for r in records]
  if metric == 'loss':
    tokens = sum(r['tokens'] for r in records)
    return ids, np.array([r['loss'] * len(records) / max(tokens, 1) for r in records])
  if metric == 'bits_per_byte' and all('bytes' in r for r in records):
    scored = sum(r['bytes'] for r in records)
    return ids, np.array([r['loss'] / math.log(2) * len(records) / max(scored, 1)
                          for r in records])
  if metric == 'exact_match' and all('prediction' in r for r in records):
    return ids, np.array([100.0 * scoring.same_text(r['prediction'], r['reference'])
                          for r in records])
  if metric == 'accuracy' and all('correct' in r for r in records):
    return ids, np.array([100.0 * r['correct'] for r in records])
  return None


@dataclasses.dataclass
class RunScores:
  """One fine-tuning run's scores: {metric: value} and {metric: (ids, per-example values)}."""
  pretrain_seed: int
  finetune_seed: int
  run: str
  status: str
  values: dict
  examples: dict
  tokens: int = 0          # scored tokens of the test list


def task_scores(run_dir, task):
  """({metric: value}, {metric: example_scores}, scored tokens) of one fine-tuning run, from its
  scored test list (training/scoring.py): BLEU from its test/bleu, the rest per example."""
  records = scoring.last_records(run_dir)
  out, examples = {}, {}
  for metric in task.metrics:
    if metric == 'bleu':
      out[metric] = _last(_scalars(run_dir), 'test/bleu') if records else None
      continue
    scored = example_scores(records, metric)
    if scored is not None:
      examples[metric] = scored
      out[metric] = float(np.mean(scored[1]))
  return out, examples, sum(r['tokens'] for r in records)


def _finetune_runs(plan, task_name, task, cell):
  """The RunScores of a cell's fine-tuning runs on a task, pretraining seed-major."""
  out = []
  for seed in range(plan.seeds):
    for ft in range(plan.finetune_seeds):
      name = plan.finetune_name(task_name, cell, seed, ft)
      run_dir = os.path.join(plan.exp_dir, name)
      values, examples, tokens = task_scores(run_dir, task)
      out.append(RunScores(seed, ft, name, read_status(run_dir).get('status', 'pending'),
                           values, examples, tokens))
  return out


def collect(plan):
  """{'pretrain': {cell: [per-seed row]}, 'runs': {(task, cell): [RunScores]},
  'scores': {(task, cell, metric): [value per run]}}."""
  pretrain, runs, scores = {}, {}, {}
  for cell in plan.cells:
    rows = []
    for seed in range(0 if cell in plan.controls else plan.seeds):
      run_dir = os.path.join(plan.exp_dir, plan.pretrain_name(cell, seed))
      scalars, status = _scalars(run_dir), read_status(run_dir)
      rows.append({'status': status.get('status', 'pending'), 'seconds': status.get('seconds'),
                   'tokens_seen': _last(scalars, 'train/tokens_seen')})
    pretrain[cell] = rows
  for task_name, task in plan.tasks.items():
    for cell in plan.cells:
      if (task_name, cell) in plan.skipped:
        continue
      runs[(task_name, cell)] = _finetune_runs(plan, task_name, task, cell)
      for metric in task.metrics:
        scores[(task_name, cell, metric)] = [r.values.get(metric)
                                             for r in runs[(task_name, cell)]]
  return {'pretrain': pretrain, 'runs': runs, 'scores': scores}


def cell_interval(runs, metric):
  """The mean over pretraining seeds (each the mean of its fine-tuning runs) and its t
  interval, clipped to the metric's range."""
  by_seed = {}
  for r in runs:
    by_seed.setdefault(r.pretrain_seed, []).append(r.values.get(metric))
  return stats.mean_interval(stats.nested_means(by_seed), bounds=stats.bounds_of(metric))


def _mean(values):
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def _metric_columns(plan):
  return [(t, m) for t, task in plan.tasks.items() for m in task.metrics]


def _reasons(plan):
  """{(task, cell): footnote number}, [footnote lines]: one note per distinct reason."""
  notes, marks = [], {}
  for key, reason in plan.skipped.items():
    if reason not in notes:
      notes.append(reason)
    marks[key] = notes.index(reason) + 1
  return marks, [f'{i}. {n}' for i, n in enumerate(notes, 1)]


def rows(plan, collected, comparisons=()):
  """One dict per cell: accounting, pretraining, every (task, metric) Interval (and whether it
  is at floor) and the Comparison against the baseline."""
  against = {(c.task, c.metric, c.cell): c for c in comparisons if c.other == plan.baseline}
  out = []
  for cell in plan.cells:
    budget, pre = plan.budget[cell], collected['pretrain'][cell]
    row = {'cell': cell, **budget, 'tokens_seen': _mean([r['tokens_seen'] for r in pre]),
           'seconds': _mean([r['seconds'] for r in pre]),
           'pretrained': sum(r['status'] == 'done' for r in pre)}
    for task, metric in _metric_columns(plan):
      runs = collected['runs'].get((task, cell))
      if runs is None:
        continue
      row[(task, metric)] = cell_interval(runs, metric)
      row[('floor', task, metric)] = stats.at_floor(metric, [r.values.get(metric) for r in runs])
      row[('runs', task, metric)] = sum(r.values.get(metric) is not None for r in runs)
      if (task, metric, cell) in against:
        row[('vs', task, metric)] = against[(task, metric, cell)]
    out.append(row)
  return out


def _num(x):
  for unit, scale in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if x is not None and abs(x) >= scale:
      return f'{x / scale:.3g}{unit}'
  return '' if x is None else f'{x:.3g}'


def _cell_text(row, key, marks, plan):
  task, cell = key[0], row['cell']
  if (task, cell) in plan.skipped:
    return f'n/a ({marks[(task, cell)]})'
  value = row.get(key)
  if value is None or not value.n:
    return ''
  return 'at floor' if row.get(('floor',) + key) else value.text()


def protocol_lines(plan, collected):
  """What every cell was matched on, per task: the test ids and scored tokens (checked equal
  across the cells' runs, or the difference named) and the fine-tuning examples."""
  finetune = plan.module.SCALES[plan.scale].get('finetune', {})
  seen = int(finetune.get('train.steps', 100)) * int(finetune.get('train.batch_size', 16))
  lines = []
  for task in plan.tasks:
    scored = {(len(next(iter(r.examples.values()))[0]) if r.examples else 0, r.tokens)
              for (t, _), runs in collected['runs'].items() if t == task for r in runs
              if r.examples}
    if not scored:
      lines.append(f'- {task}: no run scored yet')
      continue
    if len(scored) == 1:
      (n, tokens), = scored
      what = f'the same {n} test examples ({tokens:,} scored tokens) for every cell'
    else:
      what = ('NOT the same test examples / tokens across runs: ' +
              ', '.join(f'{n} ({t:,})' for n, t in sorted(scored)))
    lines.append(f'- {task}: {what}; fine-tuned on the same {seen:,} training examples '
                 '(unpacked rows, same order)')
  return ['Protocol (comparisons/tasks.py):', *lines]


def budget_line(plan, budget):
  """One line: what the cells are matched in and how FLOPs are counted."""
  from transformer.monitoring import accounting  # pylint: disable=import-outside-toplevel
  conv = f'FLOPs counted as {plan.convention} ({accounting.FLOP_CONVENTIONS[plan.convention]})'
  if plan.budget_kind == 'steps':
    steps = plan.budget[plan.baseline]['steps'] if plan.budget else '?'
    return f'budget: equal steps ({steps}, T5\'s protocol); {conv}'
  return f'budget: cost x {budget:.3g} pretraining FLOPs of {plan.baseline}; {conv}'


def _budget_cells(row):
  return [str(row['steps']), f'{row.get("cost", 1.0):g}'] + [
      _num(row['flops'][c]) for c in FLOP_COLUMNS]


def markdown(plan, table, comparisons, collected):
  """comparison.md's tables: the cells, the protocol, the differences between cells, their
  bootstraps."""
  marks, notes = _reasons(plan)
  metrics = _metric_columns(plan)
  names = [f'{t} {METRIC_LABELS.get(m, m)}' for t, m in metrics]
  head = ['cell', 'family', 'objective', 'params', 'non-emb params', 'pretrain steps', 'cost'] + [
      f'FLOPs {c}' + (' (budget)' if c == plan.convention and plan.budget_kind == 'flops' else '')
      for c in FLOP_COLUMNS] + ['tokens seen', 'wall s'] + names
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in table:
    cells = [row['cell'] + (' (baseline)' if row['cell'] == plan.baseline else ''),
             row['family'], row['objective'], f'{row["params"]:,}',
             f'{row["non_embedding"]:,}', *_budget_cells(row),
             _num(row['tokens_seen']), '' if row['seconds'] is None else f'{row["seconds"]:.0f}']
    cells += [_cell_text(row, key, marks, plan) for key in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', *protocol_lines(plan, collected)]
  runs = '' if plan.finetune_seeds == 1 else (
      f', each the mean of its {plan.finetune_seeds} fine-tuning seeds')
  lines += ['', f'Scores: mean ± 95% Student-t interval over {plan.seeds} pretraining seeds'
            f'{runs}; a bounded score whose interval its range cuts shows mean [low, high]; '
            '"at floor": every run scored 0.', '']

  def skipped(task, *cells):
    cell = next((c for c in cells if (task, c) in plan.skipped), None)
    return '' if cell is None else f'n/a ({marks[(task, cell)]})'

  lines += lr_grid.markdown(plan)
  lines += pairs_lib.markdown(plan, comparisons, metrics, names, skipped)
  lines += scaling.markdown(plan, collected, METRIC_LABELS)
  environment = manifest.summary_line(plan.exp_dir)
  return '\n'.join(lines + ([''] + notes if notes else []) + (['', environment] if environment
                                                              else []))


CELL_FIELDS = ['cell', 'family', 'objective', 'params', 'non_embedding', 'steps', 'cost',
               'train_flops', 'flops_matmul', 'flops_6n', 'flops_6n_attn', 'tokens_seen',
               'seconds', 'lr_pretrain', 'lr_finetune', 'task', 'metric', 'n', 'runs', 'mean',
               'low', 'high',
               'at_floor', 'diff_mean', 'diff_low', 'diff_high', 'p_raw', 'p_holm', 'p_bh',
               'note']


def _write_rows(path, fields, rows_out):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows_out)


def write_csv(path, plan, table):
  """comparison.csv: one row per (cell, task, metric), the difference to the baseline."""
  out, chosen = [], lr_grid.read(plan.exp_dir)
  for row in table:
    for task, metric in _metric_columns(plan):
      line = {**row, **{f'flops_{c}': row['flops'][c] for c in FLOP_COLUMNS},
              'task': task, 'metric': metric,
              'lr_pretrain': lr_grid.used(chosen, row['cell']),
              'lr_finetune': lr_grid.used(chosen, row['cell'], task),
              'note': plan.skipped.get((task, row['cell']), '')}
      value, diff = row.get((task, metric)), row.get(('vs', task, metric))
      if value is not None:
        line.update(n=value.n, runs=row[('runs', task, metric)], mean=value.mean, low=value.low,
                    high=value.high, at_floor=row[('floor', task, metric)])
      if diff is not None:
        line.update(diff_mean=diff.interval.mean, diff_low=diff.interval.low,
                    diff_high=diff.interval.high, p_raw=diff.p, p_holm=diff.p_holm,
                    p_bh=diff.p_bh)
      out.append(line)
  _write_rows(path, CELL_FIELDS, out)


SEED_FIELDS = ['cell', 'task', 'metric', 'pretrain_seed', 'finetune_seed', 'run', 'status',
               'value', 'examples', 'tokens']


def write_seeds_csv(path, plan, collected):
  """comparison_seeds.csv: one row per (cell, task, metric, pretraining, fine-tuning seed)."""
  out = []
  for (task, cell), runs in collected['runs'].items():
    for metric in plan.tasks[task].metrics:
      for r in runs:
        examples = r.examples.get(metric)
        out.append({'cell': cell, 'task': task, 'metric': metric,
                    'pretrain_seed': r.pretrain_seed, 'finetune_seed': r.finetune_seed,
                    'run': r.run, 'status': r.status, 'value': r.values.get(metric),
                    'examples': '' if examples is None else len(examples[1]),
                    'tokens': r.tokens or ''})
  _write_rows(path, SEED_FIELDS, out)


def write(plan):
  """Write comparison.md, the three CSVs and comparison.png from the runs on disk; returns the
  markdown."""
  os.makedirs(plan.exp_dir, exist_ok=True)
  collected = collect(plan)
  comparisons = pairs_lib.compare_all(plan, collected)
  table = rows(plan, collected, comparisons)
  text = markdown(plan, table, comparisons, collected)
  with open(os.path.join(plan.exp_dir, 'comparison.md'), 'w') as f:
    f.write(f'# {plan.module.EXPERIMENT} (scale {plan.scale}, {plan.seeds} seeds; '
            f'{budget_line(plan, _budget(plan))})\n\n{text}\n')
  write_csv(os.path.join(plan.exp_dir, 'comparison.csv'), plan, table)
  _write_rows(os.path.join(plan.exp_dir, 'comparison_pairs.csv'), pairs_lib.PAIR_FIELDS,
              [pairs_lib.csv_row(c) for c in comparisons])
  write_seeds_csv(os.path.join(plan.exp_dir, 'comparison_seeds.csv'), plan, collected)
  board.plot(os.path.join(plan.exp_dir, 'comparison.png'), plan, table, collected, METRIC_LABELS)
  board.write(plan, table, text, METRIC_LABELS)
  return (f'{text}\n\nWrote {plan.exp_dir}/comparison.md, comparison.csv, comparison_pairs.csv, '
          f'comparison_seeds.csv, comparison.png and the TensorBoard run {board.RUN}')


def _budget(plan):
  """The baseline's pretraining FLOPs under the plan's convention."""
  base = plan.budget[plan.baseline]
  return base['flops_per_step'] * base['steps']


def describe(plan):
  """The plan as text: each cell's budget, then what is fine-tuned on what and what is not."""
  lines = [f'{"cell":<24}{"family":<17}{"objective":<17}{"params":>11}{"steps":>7}{"cost":>6}'
           + ''.join(f'{"FLOPs " + c:>14}' for c in FLOP_COLUMNS) + f'{"vs budget":>10}']
  for cell, row in plan.budget.items():
    lines.append(f'{cell:<24}{row["family"]:<17}{row["objective"]:<17}{row["params"]:>11,}'
                 f'{row["steps"]:>7}{row.get("cost", 1.0):>6g}'
                 + ''.join(f'{row["flops"][c]:>14.3g}' for c in FLOP_COLUMNS)
                 + f'{row["budget_ratio"]:>9.2f}x')
  for task in plan.tasks:
    done = [c for c in plan.cells if (task, c) not in plan.skipped]
    lines.append(f'{task}: fine-tunes {", ".join(done) or "nothing"}' + ''.join(
        f'; {c}: {plan.skipped[(task, c)]}' for c in plan.cells if (task, c) in plan.skipped))
  return '\n'.join(lines + lr_grid.describe(plan))
