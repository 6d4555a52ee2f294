"""Search results, read from the study (the state of record) and each trial's event files.

Into <workdir>/<experiment>/: results.csv and results.md (one row per counted trial: its values,
state, the value the study holds, then the sweep table's columns), eval_loss.png as for sweeps,
the best trial as a ready `python -m transformer.train` command line (in results.md and
printed), and Optuna's own analysis as images: optimization_history.png,
param_importances.png and intermediate_values.png. Every file is replaced atomically through a
temporary file of its own (files.atomic_write), so workers that finish at the same time never
collide or leave half a file.
"""

import csv
import io
import os
import shlex
import warnings

from transformer.files import atomic_write
from transformer.sweeps import results
from transformer.sweeps.runner import train_command
from transformer.sweeps.search import STATES, counted, shown

COLUMNS = ('trial', 'status', 'value') + tuple(c for c in results.COLUMNS if c != 'status')
PLOTS = {'optimization_history.png': 'plot_optimization_history',
         'param_importances.png': 'plot_param_importances',
         'intermediate_values.png': 'plot_intermediate_values'}


def trial_rows(search, study, workdir):
  """One row per counted trial, in trial order."""
  rows = []
  for t in sorted(counted(study.get_trials(deepcopy=False)), key=lambda t: t.number):
    name = t.user_attrs.get('run_name', f'trial {t.number}')
    row = {'run': name, **search.values(t.params)}
    row.update(results.run_results(os.path.join(workdir, search.experiment, name)))
    values = t.intermediate_values
    row.update(trial=t.number, status=STATES[t.state.name], error=t.system_attrs.get('error', ''),
               value=t.value if t.value is not None else values[max(values)] if values else None)
    rows.append(row)
  return rows


def best_command(search, study, workdir):
  """The best complete trial as a command line that trains its config again (experiment
  <experiment>_best, run name = the trial's), or None before any trial completed."""
  try:
    best = study.best_trial
  except ValueError:
    return None
  name = best.user_attrs.get('run_name', f't{best.number}')
  overrides = {**search.overrides(name, best.params), 'experiment': f'{search.experiment}_best'}
  argv = train_command(search.base, overrides, workdir)
  return best, shlex.join(['python'] + argv[1:])


def write(search, study, workdir):
  """Write every results file; returns (rows, the text printed: table and best trial)."""
  exp_dir = os.path.join(workdir, search.experiment)
  os.makedirs(exp_dir, exist_ok=True)
  rows = trial_rows(search, study, workdir)
  fields = ['run'] + search.swept_keys + list(COLUMNS)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  _replace(os.path.join(exp_dir, 'results.csv'), buffer.getvalue())
  s = search.study
  text = (f'{s.trials} trials, {s.sampler} sampler, {s.pruner} pruner, {s.direction} '
          f'{s.metric} (value: the last one reported)\n\n'
          f'{results.markdown(rows, search.swept_keys, COLUMNS)}\n\n')
  best = best_command(search, study, workdir)
  if best:
    trial, command = best
    text += (f'Best: trial {trial.number} ({trial.user_attrs.get("run_name")}), {s.metric} '
             f'{trial.value:.4g}. Train its config again with:\n\n  {command}\n')
  _replace(os.path.join(exp_dir, 'results.md'), f'# {search.experiment}\n\n{text}')
  with atomic_write(os.path.join(exp_dir, 'eval_loss.png')) as tmp:
    results.plot(rows, tmp, title=search.experiment)
  return rows, text + _plots(study, exp_dir)


def _plots(study, exp_dir):
  """Optuna's plots as images; a line for each one that cannot be drawn yet."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  from optuna.visualization import matplotlib as plots  # pylint: disable=import-outside-toplevel
  notes = []
  for filename, function in PLOTS.items():
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ax = getattr(plots, function)(study)
      figure = ax.figure if hasattr(ax, 'figure') else ax.flat[0].figure
      figure.set_size_inches(8, 5)
      figure.tight_layout()
      with atomic_write(os.path.join(exp_dir, filename)) as tmp:
        figure.savefig(tmp, dpi=100)
      pyplot.close(figure)
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as e:
      notes.append(f'{filename}: not drawn yet ({type(e).__name__}: {e})')
  return '\n'.join(notes)


def _replace(path, text):
  with atomic_write(path) as tmp, open(tmp, 'w') as f:
    f.write(text)


def describe(search, workdir):
  """--list: the declaration, the storage, what a trial runs."""
  s = search.study
  options = lambda o: f' {o}' if o else ''
  lines = [f'search {search.experiment}: {s.trials} trials, {s.sampler} sampler (seed {s.seed})'
           f'{options(s.sampler_options)}, {s.pruner} pruner'
           f'{options(search.pruner_spec()["options"])}, {s.direction} {s.metric}',
           f'storage: {shown(search.storage_url(workdir))}']
  lines += [f'  {k}: {d}' for k, d in s.space.items()]
  overrides = {**search.fixed, **search.extra_overrides, 'experiment': search.experiment}
  lines.append('each trial: ' + shlex.join(['python'] + train_command(
      search.base, overrides, workdir)[1:]) + ' --config.run_name=tNN,... + its values')
  return '\n'.join(lines)
