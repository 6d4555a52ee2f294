"""The results of an architecture comparison, rebuilt from the runs' event files and decodes.

Writes into <workdir>/<experiment>/:
  comparison.md    per cell: parameters, non-embedding parameters, pretraining FLOPs, tokens
                   seen, wall time, and each downstream score as mean ± 95% interval over seeds
                   (Student t); then the paired difference to the baseline cell (per-seed
                   differences: mean and interval, * where the interval excludes 0); cells that
                   cannot do a task say why
  comparison.csv   one row per (cell, task, metric): n, mean, interval, the paired difference
  comparison.png   one panel per (task, metric): every cell's seeds, mean and interval
"""

import csv
import glob
import json
import os
import re

from transformer.comparisons import stats
from transformer.sweeps.results import read_status

METRIC_LABELS = {'bleu': 'BLEU', 'exact_match': 'exact match %', 'accuracy': 'accuracy %',
                 'loss': 'eval loss (lower is better)'}


def _scalars(run_dir):
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  return read_events(run_dir)['scalars'] if os.path.isdir(run_dir) else {}


def _last(scalars, tag):
  points = scalars.get(tag, [])
  return points[-1][1] if points else None


def last_decodes(run_dir):
  """The {input, prediction, reference} lines of a run's last decodes/step_N.jsonl ([] if none)."""
  files = glob.glob(os.path.join(run_dir, 'decodes', 'step_*.jsonl'))
  if not files:
    return []
  path = max(files, key=lambda p: int(re.findall(r'step_(\d+)', p)[-1]))
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def exact_match(samples):
  """Percent of samples whose prediction equals the reference (whitespace-normalised)."""
  if not samples:
    return None
  same = lambda s: ' '.join(s['prediction'].split()) == ' '.join(s['reference'].split())
  return 100.0 * sum(map(same, samples)) / len(samples)


def task_scores(run_dir, task):
  """{metric: value} of one fine-tuning run: BLEU and loss from its events, exact match (and the
  text-to-text accuracy of an encoder-decoder classifier) from its last decodes."""
  scalars, decodes = _scalars(run_dir), last_decodes(run_dir)
  out = {}
  for metric in task.metrics:
    if metric in ('bleu', 'loss'):
      out[metric] = _last(scalars, f'eval/{metric}')
    elif metric == 'exact_match' or (metric == 'accuracy' and decodes):
      out[metric] = exact_match(decodes)
    elif metric == 'accuracy':
      value = _last(scalars, 'eval/accuracy')
      out[metric] = None if value is None else 100.0 * value
  return out


def collect(plan):
  """{'pretrain': {cell: [per-seed row]}, 'scores': {(task, cell, metric): [value per seed]}}."""
  pretrain, scores = {}, {}
  for cell in plan.cells:
    rows = []
    for seed in range(plan.seeds):
      run_dir = os.path.join(plan.exp_dir, plan.pretrain_name(cell, seed))
      scalars, status = _scalars(run_dir), read_status(run_dir)
      rows.append({'status': status.get('status', 'pending'), 'seconds': status.get('seconds'),
                   'tokens_seen': _last(scalars, 'train/tokens_seen')})
    pretrain[cell] = rows
  for task_name, task in plan.tasks.items():
    for cell in plan.cells:
      if (task_name, cell) in plan.skipped:
        continue
      per_seed = [task_scores(os.path.join(plan.exp_dir, plan.finetune_name(task_name, cell, s)),
                              task) for s in range(plan.seeds)]
      for metric in task.metrics:
        scores[(task_name, cell, metric)] = [row.get(metric) for row in per_seed]
  return {'pretrain': pretrain, 'scores': scores}


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


def rows(plan, collected):
  """One dict per cell: accounting, pretraining and every (task, metric) Interval / paired."""
  out = []
  for cell in plan.cells:
    budget, pre = plan.budget[cell], collected['pretrain'][cell]
    row = {'cell': cell, **budget, 'tokens_seen': _mean([r['tokens_seen'] for r in pre]),
           'seconds': _mean([r['seconds'] for r in pre]),
           'pretrained': sum(r['status'] == 'done' for r in pre)}
    for task, metric in _metric_columns(plan):
      values = collected['scores'].get((task, cell, metric))
      if values is None:
        continue
      row[(task, metric)] = stats.mean_interval(values)
      base = collected['scores'].get((task, plan.baseline, metric))
      if base is not None and cell != plan.baseline:
        row[('vs', task, metric)] = stats.paired(values, base)
    out.append(row)
  return out


def _num(x):
  for unit, scale in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if x is not None and abs(x) >= scale:
      return f'{x / scale:.3g}{unit}'
  return '' if x is None else f'{x:.3g}'


def _cell_text(row, key, marks, plan, paired=False):
  cell = row['cell']
  task = key[1] if paired else key[0]
  if (task, cell) in plan.skipped:
    return f'n/a ({marks[(task, cell)]})'
  value = row.get(key)
  if value is None or not value.n:
    return '' if not paired else ('baseline' if cell == plan.baseline else '')
  if not paired:
    return value.text()
  if math_isnan(value.low):
    return f'{value.mean:+.2f}'
  star = '*' if value.excludes_zero() else ''
  return f'{value.mean:+.2f} [{value.low:+.2f}, {value.high:+.2f}]{star}'


def math_isnan(x):
  return x != x  # pylint: disable=comparison-with-itself


def markdown(plan, table):
  """comparison.md's two tables and the footnotes."""
  marks, notes = _reasons(plan)
  metrics = _metric_columns(plan)
  names = [f'{t} {METRIC_LABELS.get(m, m)}' for t, m in metrics]
  head = ['cell', 'family', 'objective', 'params', 'non-emb params', 'pretrain steps',
          'train FLOPs', 'tokens seen', 'wall s'] + names
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in table:
    cells = [row['cell'] + (' (baseline)' if row['cell'] == plan.baseline else ''),
             row['family'], row['objective'], f'{row["params"]:,}',
             f'{row["non_embedding"]:,}', str(row['steps']), _num(row['train_flops']),
             _num(row['tokens_seen']), '' if row['seconds'] is None else f'{row["seconds"]:.0f}']
    cells += [_cell_text(row, key, marks, plan) for key in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', f'Paired difference to {plan.baseline} (same seed; mean [95% interval] of the '
            'per-seed differences; * where the interval excludes 0):', '',
            '| cell | ' + ' | '.join(names) + ' |', '|' + '---|' * (len(names) + 1)]
  for row in table:
    lines.append(f'| {row["cell"]} | ' + ' | '.join(
        _cell_text(row, ('vs',) + key, marks, plan, paired=True) for key in metrics) + ' |')
  return '\n'.join(lines + ([''] + notes if notes else []))


def write_csv(path, plan, table):
  fields = ['cell', 'family', 'objective', 'params', 'non_embedding', 'steps', 'train_flops',
            'tokens_seen', 'seconds', 'task', 'metric', 'n', 'mean', 'low', 'high',
            'diff_mean', 'diff_low', 'diff_high', 'note']
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    for row in table:
      for task, metric in _metric_columns(plan):
        out = {**row, 'task': task, 'metric': metric,
               'note': plan.skipped.get((task, row['cell']), '')}
        value, diff = row.get((task, metric)), row.get(('vs', task, metric))
        if value is not None:
          out.update(n=value.n, mean=value.mean, low=value.low, high=value.high)
        if diff is not None:
          out.update(diff_mean=diff.mean, diff_low=diff.low, diff_high=diff.high)
        writer.writerow(out)


def plot(path, plan, table, collected):
  """One panel per (task, metric): each seed (dots), the mean and its 95% interval (bar)."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  metrics = _metric_columns(plan)
  fig = Figure(figsize=(4.2 * max(1, len(metrics)), 4.2), dpi=90)
  FigureCanvasAgg(fig)
  cells = [row['cell'] for row in table]
  for i, (task, metric) in enumerate(metrics):
    ax = fig.add_subplot(1, max(1, len(metrics)), i + 1)
    for y, row in enumerate(table):
      value = row.get((task, metric))
      color = 'tab:red' if row['cell'] == plan.baseline else 'tab:blue'
      if value is None or not value.n:
        ax.text(0.02, y, 'n/a', va='center', fontsize=7, color='gray',
                transform=ax.get_yaxis_transform())
        continue
      seeds = [v for v in collected['scores'][(task, row['cell'], metric)] if v is not None]
      ax.plot(seeds, [y] * len(seeds), 'o', color=color, alpha=0.4, markersize=4)
      err = None if math_isnan(value.low) else [[value.mean - value.low], [value.high - value.mean]]
      ax.errorbar([value.mean], [y], xerr=err, fmt='D', color=color, capsize=3, markersize=5)
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels(cells if i == 0 else [''] * len(cells), fontsize=8)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_title(f'{task}: {METRIC_LABELS.get(metric, metric)}', fontsize=9)
    ax.grid(alpha=0.3, axis='x')
  fig.suptitle(f'{plan.module.EXPERIMENT} ({plan.scale}, {plan.seeds} seeds): mean and 95% '
               f'interval, baseline {plan.baseline} in red', fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def write(plan):
  """Write comparison.md/.csv/.png from the runs on disk; returns the markdown."""
  os.makedirs(plan.exp_dir, exist_ok=True)
  collected = collect(plan)
  table = rows(plan, collected)
  text = markdown(plan, table)
  with open(os.path.join(plan.exp_dir, 'comparison.md'), 'w') as f:
    f.write(f'# {plan.module.EXPERIMENT} (scale {plan.scale}, {plan.seeds} seeds)\n\n{text}\n')
  write_csv(os.path.join(plan.exp_dir, 'comparison.csv'), plan, table)
  plot(os.path.join(plan.exp_dir, 'comparison.png'), plan, table, collected)
  return f'{text}\n\nWrote {plan.exp_dir}/comparison.md, comparison.csv, comparison.png'


def describe(plan):
  """The plan as text: each cell's budget, then what is fine-tuned on what and what is not."""
  lines = [f'{"cell":<24}{"family":<17}{"objective":<17}{"params":>11}{"steps":>7}'
           f'{"train FLOPs":>13}{"vs budget":>10}']
  for cell, row in plan.budget.items():
    lines.append(f'{cell:<24}{row["family"]:<17}{row["objective"]:<17}{row["params"]:>11,}'
                 f'{row["steps"]:>7}{row["train_flops"]:>13.3g}{row["budget_ratio"] - 1:>+10.1%}')
  for task in plan.tasks:
    done = [c for c in plan.cells if (task, c) not in plan.skipped]
    lines.append(f'{task}: fine-tunes {", ".join(done) or "nothing"}' + ''.join(
        f'; {c}: {plan.skipped[(task, c)]}' for c in plan.cells if (task, c) in plan.skipped))
  return '\n'.join(lines)
