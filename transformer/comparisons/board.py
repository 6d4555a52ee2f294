"""The comparison itself in TensorBoard: `./launch.sh tensorboard <workdir>/<experiment>` shows
the result beside the runs, as the run `comparison_summary`:

  text 'comparison'    comparison.md (the cell table, the protocol, every pair's difference)
  text 'cells'         which cell each x position of the charts is
  charts               per (task, metric) a margin chart (custom scalars): each cell's mean at
                       x = its position in the table, with its 95% interval as the band; tags
                       comparison/<task>/<metric>/{mean,low,high}

The directory is rewritten whole each time the results are (`--results` too), so the charts
never hold points of an earlier table.
"""

import math
import os
import shutil

from transformer.monitoring.writer import MetricWriter

RUN = 'comparison_summary'


def _tag(task, metric, part):
  return f'comparison/{task}/{metric}/{part}'


def write(plan, table, text, metric_labels):
  """Write the summary run from the table's rows (results.rows) and comparison.md's text."""
  run_dir = os.path.join(plan.exp_dir, RUN)
  shutil.rmtree(run_dir, ignore_errors=True)
  columns = [(t, m) for t, task in plan.tasks.items() for m in task.metrics]
  layout = {}
  with MetricWriter(run_dir) as writer:
    for i, row in enumerate(table):
      values = {}
      for task, metric in columns:
        interval = row.get((task, metric))
        if interval is None or not interval.n:
          continue
        values[_tag(task, metric, 'mean')] = interval.mean
        for part in ('low', 'high'):
          bound = getattr(interval, part)
          values[_tag(task, metric, part)] = interval.mean if math.isnan(bound) else bound
      writer.scalars(i, values)
    for task, metric in columns:
      title = f'{task}: {metric_labels.get(metric, metric)} by cell (x: cell position)'
      layout[title] = ['Margin', [_tag(task, metric, p) for p in ('mean', 'low', 'high')]]
    writer.layout({f'comparison {plan.module.EXPERIMENT}': layout})
    writer.text(0, 'comparison', text)
    writer.text(0, 'cells', '\n'.join(f'{i}. {row["cell"]}' for i, row in enumerate(table)))
  return run_dir
