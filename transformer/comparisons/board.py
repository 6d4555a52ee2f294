"""The comparison as pictures: comparison.png (`plot`: per task and metric every cell's runs,
mean and 95% interval) and, in TensorBoard (`write`), `./launch.sh tensorboard
<workdir>/<experiment>` shows the result beside the runs, as the run `comparison_summary`:

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


def plot(path, plan, table, collected, metric_labels):
  """One panel per (task, metric): each seed (dots), the mean and its 95% interval (bar)."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  metrics = [(t, m) for t, task in plan.tasks.items() for m in task.metrics]
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
      err = None if math.isnan(value.low) else [[value.mean - value.low], [value.high - value.mean]]
      ax.errorbar([value.mean], [y], xerr=err, fmt='D', color=color, capsize=3, markersize=5)
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels(cells if i == 0 else [''] * len(cells), fontsize=8)
    ax.set_ylim(len(cells) - 0.5, -0.5)
    ax.set_title(f'{task}: {metric_labels.get(metric, metric)}', fontsize=9)
    ax.grid(alpha=0.3, axis='x')
  fig.suptitle(f'{plan.module.EXPERIMENT} ({plan.scale}, {plan.seeds} seeds): runs, mean and '
               f'95% interval, baseline {plan.baseline} in red', fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
