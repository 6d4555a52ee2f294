"""Sweep results: one row per run read back from its event files and status file, written as
results.csv, results.md and eval_loss.png (eval loss against tokens seen) beside the runs, each
replaced whole (files.atomic_write)."""

import csv
import json
import os

from transformer.files import atomic_write

STATUS_FILE = 'sweep_status.json'
COLUMNS = ('status', 'final_eval_loss', 'best_eval_loss', 'final_eval_accuracy',
           'best_eval_accuracy', 'tokens_per_sec', 'params', 'tokens_seen', 'steps', 'error')
# Generation metrics (seq2seq runs) and bits per byte (language models): a final_ and best_
# column each, where some run logged them; best is the highest, or the lowest for LOWER.
GENERATION = ('bleu', 'rouge1', 'rouge2', 'rougeL', 'bits_per_byte')
LOWER = ('bits_per_byte',)


def _generation(scalars):
  """{'final_eval_bleu': .., 'best_eval_bleu': .., ...} of the GENERATION metrics a run logged."""
  out = {}
  for name in GENERATION:
    points = scalars.get(f'eval/{name}', [])
    if points:
      out[f'final_eval_{name}'] = _last(points)
      out[f'best_eval_{name}'] = (min if name in LOWER else max)(v for _, v in points)
  return out


def table_columns(rows):
  """COLUMNS plus the generation columns some row has, before 'tokens_per_sec'."""
  extra = [f'{kind}_eval_{name}' for name in GENERATION for kind in ('final', 'best')
           if any(f'{kind}_eval_{name}' in row for row in rows)]
  at = COLUMNS.index('tokens_per_sec')
  return COLUMNS[:at] + tuple(extra) + COLUMNS[at:]


def _last(points):
  return points[-1][1] if points else None


def run_results(run_dir):
  """One results row from a run's event files and status file."""
  from transformer.monitoring.events import read_events  # pylint: disable=import-outside-toplevel
  status = read_status(run_dir)
  scalars = read_events(run_dir)['scalars'] if os.path.isdir(run_dir) else {}
  loss, acc = scalars.get('eval/loss', []), scalars.get('eval/accuracy', [])
  tps = [v for _, v in scalars.get('perf/tokens_per_sec', [])]
  steps = [s for tag in ('train/loss', 'eval/loss') for s, _ in scalars.get(tag, [])]
  return {'status': status.get('status', 'pending'),
          'final_eval_loss': _last(loss), 'best_eval_loss': min((v for _, v in loss), default=None),
          'final_eval_accuracy': _last(acc),
          'best_eval_accuracy': max((v for _, v in acc), default=None),
          # the first window holds the warm-up of the input pipeline; leave it out when we can
          'tokens_per_sec': sum(tps[1:] or tps) / len(tps[1:] or tps) if tps else None,
          'params': _last(scalars.get('params/total', [])),
          'tokens_seen': _last(scalars.get('train/tokens_seen', [])),
          'steps': max(steps, default=None), 'error': status.get('error', ''),
          '_curve': _eval_curve(scalars), **_generation(scalars)}


def _eval_curve(scalars):
  """[(tokens seen, eval loss)]: eval steps mapped onto train/tokens_seen by interpolation."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  seen, loss = scalars.get('train/tokens_seen', []), scalars.get('eval/loss', [])
  if not seen or not loss:
    return []
  steps, tokens = [0] + [s for s, _ in seen], [0.0] + [v for _, v in seen]
  slope = tokens[-1] / max(steps[-1], 1)   # past the last train point: the average rate
  return [(float(np.interp(s, steps, tokens)) if s <= steps[-1] else s * slope, v)
          for s, v in loss]


def write_results(sweep, workdir):
  """Write results.csv, results.md and eval_loss.png for every run; returns the rows."""
  exp_dir = os.path.join(workdir, sweep.experiment)
  os.makedirs(exp_dir, exist_ok=True)
  rows = []
  for r in sweep.runs:
    row = {'run': r['name'], **{k: r['swept'][k] for k in sweep.swept_keys}}
    row.update(run_results(os.path.join(exp_dir, r['name'])))
    rows.append(row)
  fields = ['run'] + sweep.swept_keys + list(table_columns(rows))
  with atomic_write(os.path.join(exp_dir, 'results.csv')) as tmp, open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  with atomic_write(os.path.join(exp_dir, 'results.md')) as tmp, open(tmp, 'w') as f:
    f.write(f'# {sweep.experiment}\n\n{markdown(rows, sweep.swept_keys)}\n')
  with atomic_write(os.path.join(exp_dir, 'eval_loss.png')) as tmp:
    plot(rows, tmp, title=sweep.experiment)
  return rows


def cell(value):
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4g}' if not value.is_integer() or abs(value) < 1e4 else f'{int(value):,}'
  return str(value).replace('|', '/')


def markdown(rows, swept_keys, columns=None):
  columns = table_columns(rows) if columns is None else columns
  head = ['run'] + list(swept_keys) + [c for c in columns if c != 'error']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    lines.append('| ' + ' | '.join(cell(row.get(c)) for c in head) + ' |')
  errors = [f'- {row["run"]}: {row["error"]}' for row in rows if row.get('error')]
  return '\n'.join(lines + ([''] + errors if errors else []))


def plot(rows, path, title=''):
  """eval/loss against train/tokens_seen, one line per run (matplotlib, Agg)."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(7, 4.5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for row in rows:
    if row['_curve']:
      x, y = zip(*row['_curve'])
      ax.plot(x, y, marker='o', markersize=3, label=row['run'])
  ax.set_xlabel('train/tokens_seen')
  ax.set_ylabel('eval/loss')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if any(row['_curve'] for row in rows):
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def read_status(run_dir):
  try:
    with open(os.path.join(run_dir, STATUS_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}
