"""The GLUE table of a suite (comparisons/glue.py): per task the chosen learning rate and its dev
scores x 100, and the GLUE score (the mean of the task scores), as glue.md, glue.csv and a
TensorBoard text summary (<experiment>/glue_table/), each replaced whole.

  rows = choose(plan)        # [{'task', 'lr', 'score', '<task>_<metric>': ...}] + the average
  write(plan, rows)          # -> (markdown path, csv path)

A task whose runs have no score yet (failed, pending) has an empty row and no part in the
average, which then says over how many tasks it is taken.
"""

import csv
import io
import json
import os
import shutil

from transformer.comparisons import glue
from transformer.files import atomic_write

MISMATCHED_FILE = 'glue_mismatched.json'   # beside a chosen MNLI run: its mismatched scores
TABLE_DIR = 'glue_table'


def run_scores(plan, task, lr):
  """{column: value} of one run (None where it logged nothing), and the task score."""
  run_dir = os.path.join(plan.exp_dir, plan.run_name(task, lr))
  scalars = glue.final_scalars(run_dir)
  mismatched = os.path.join(run_dir, MISMATCHED_FILE)
  if os.path.exists(mismatched):
    with open(mismatched) as f:
      scalars.update({f'mismatched/{k}': v for k, v in json.load(f).items()})
  values = {name: scalars.get(tag) for name, tag in glue.columns(task)}
  return values


def best_lr(plan, task):
  """(lr, its scores) of the run with the best dev score (MNLI: matched accuracy), or (None, {})."""
  best = (None, {}, None)
  for lr in plan.lrs:
    values = run_scores(plan, task, lr)
    key = [v for name, v in values.items() if name != 'mnli_mm_accuracy']
    score = glue.task_score(key)
    if score is not None and (best[2] is None or score > best[2]):
      best = (lr, values, score)
  return best[0], best[1]


def choose(plan):
  """The table's rows: one per task, then the average."""
  rows = []
  for task in plan.tasks:
    lr, values = best_lr(plan, task)
    if task == 'mnli' and 'mnli_mm_accuracy' in values and values['mnli_mm_accuracy'] is None:
      values = {k: v for k, v in values.items() if k != 'mnli_mm_accuracy'}   # no mismatched
    score = glue.task_score(list(values.values()))
    rows.append({'task': task, 'lr': lr, 'score': score,
                 **{k: None if v is None else 100.0 * v for k, v in values.items()}})
  scored = [r['score'] for r in rows if r['score'] is not None]
  rows.append({'task': f'average ({len(scored)} of {len(rows)} tasks)', 'lr': None,
               'score': sum(scored) / len(scored) if scored else None})
  return rows


def _cell(value):
  return '' if value is None else f'{value:.1f}'


def markdown(plan, rows):
  metrics = [k for r in rows for k in r if k not in ('task', 'lr', 'score')]
  metrics = list(dict.fromkeys(metrics))
  head = ['task', 'score', *metrics, 'lr']
  lines = [f'# GLUE: {plan.init_from}', '',
           f'{plan.family}, {plan.epochs:g} epochs at batch {plan.batch_size}, lr chosen on '
           f'the dev set from {", ".join(glue.runner.format_value(x) for x in plan.lrs)}; '
           'scores x 100 on the dev sets', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [r['task'], _cell(r['score']), *(_cell(r.get(m)) for m in metrics),
             '' if r['lr'] is None else glue.runner.format_value(r['lr'])]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write(plan, rows):
  """glue.md, glue.csv and the TensorBoard text summary; returns the two file paths."""
  from transformer.monitoring import writer as tb  # pylint: disable=import-outside-toplevel
  os.makedirs(plan.exp_dir, exist_ok=True)
  text = markdown(plan, rows)
  md_path, csv_path = (os.path.join(plan.exp_dir, f'glue.{ext}') for ext in ('md', 'csv'))
  with atomic_write(md_path) as tmp, open(tmp, 'w') as f:
    f.write(text)
  names = list(dict.fromkeys(k for r in rows for k in r))
  buffer = io.StringIO()
  out = csv.DictWriter(buffer, fieldnames=names)
  out.writeheader()
  out.writerows(rows)
  with atomic_write(csv_path) as tmp, open(tmp, 'w') as f:
    f.write(buffer.getvalue())
  board = os.path.join(plan.exp_dir, TABLE_DIR)
  shutil.rmtree(board, ignore_errors=True)   # one summary: the latest table
  with tb.MetricWriter(board) as w:
    w.text(0, 'glue', text)
  return md_path, csv_path
