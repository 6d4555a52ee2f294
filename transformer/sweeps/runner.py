"""Sweeps: declare a list of config overrides in a Python file, run each as its own training job.

  ./launch.sh sweep experiments/sweep_lr.py [--workdir runs] [--parallel K] [--slurm]
      [--max_runs N] [--index I] [--list] [--results] [--config.a.b=v ...]

A sweep file names a base config, an experiment and the runs (big_vision-style, beside a config):

  BASE = 'configs/gpt2.py:tiny'
  EXPERIMENT = 'gpt2_lr'
  OVERRIDES = {'train.steps': 500}                     # every run
  def sweep():
    return grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [2, 4]})

A run's overrides may also hold 'run_name' (else one is made from the swept values, e.g.
`lr=3e-3,layers=4`) and 'config' (another config spec than BASE, for comparisons across families).
`--config.KEY=VALUE` on the command line applies to every run (after the file's overrides).
Each run is `python -m transformer.train` in a separate process, writing
<workdir>/<experiment>/<run_name>/ (train.log, sweep_status.json beside its events and
checkpoints). Runs whose checkpoints reached their last step are skipped, interrupted ones resume
(the trainer does both), a failed run is recorded and the others go on. At the end the runner
writes results.csv, results.md and eval_loss.png into <workdir>/<experiment>/, read back from
each run's event files with `transformer.monitoring.events.read_events`.

A file may declare `search()` instead of `sweep()`: Optuna then proposes the runs
(transformer/sweeps/search.py and worker.py).
"""

import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any

from transformer import config as config_lib
from transformer.training import optim
from transformer.sweeps.results import STATUS_FILE, read_status
from transformer.errors import ConfigError
from transformer.files import atomic_write

REPO = config_lib.REPO
LOG_FILE = 'train.log'
# Short names for the run name; other keys use their last component ('opt.b2' -> 'b2').
ALIASES = {'opt.learning_rate': 'lr', 'model.num_layers': 'layers', 'model.d_model': 'd',
           'model.num_heads': 'heads', 'model.d_ff': 'ff', 'train.batch_size': 'bs',
           'opt.weight_decay': 'wd', 'opt.warmup_steps': 'warmup', 'model.dropout_rate': 'drop',
           'data.seq_len': 'len'}
SPECIAL_KEYS = ('config', 'run_name')


# -- names and commands -----------------------------------------------------------------------
def format_value(value):
  """Short, filesystem-safe text of a swept value: 0.0003 -> '3e-4', 'a/b' -> 'a_b'."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    if value != 0 and math.isfinite(value) and (abs(value) < 0.1 or abs(value) >= 1e5):
      mantissa, exponent = f'{value:.2e}'.split('e')
      return f'{mantissa.rstrip("0").rstrip(".")}e{int(exponent)}'
    return f'{value:g}'
  if isinstance(value, (tuple, list)):
    return '-'.join(format_value(v) for v in value)
  return re.sub(r'[^A-Za-z0-9._+-]', '_', str(value))


def run_name(overrides, swept_keys=None):
  """'lr=3e-4,layers=4' from the swept keys of one run (all its keys when none are given)."""
  if overrides.get('run_name'):
    return str(overrides['run_name'])
  keys = [k for k in (swept_keys or overrides) if k in overrides and k not in SPECIAL_KEYS]
  name = ','.join(f'{ALIASES.get(k, k.split(".")[-1])}={format_value(overrides[k])}' for k in keys)
  return name or 'run'


def override_text(value):
  """The TEXT of --config.KEY=TEXT that the child's `config.parse_value` reads back as `value`:
  bools as true/false, floats and (nested) tuples as Python literals, strings and ints as is."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (float, tuple, list)):
    return repr(value)
  return str(value)


def train_command(config_spec, overrides, workdir):
  """The argv of one run: `python -m transformer.train` with every override as --config.K=V."""
  return ([sys.executable, '-m', 'transformer.train', '--config', config_spec,
           '--workdir', workdir] +
          [f'--config.{k}={override_text(v)}' for k, v in overrides.items()])


def load_module(path, wanted=('sweep',)):
  """The sweep file as a module; it must define BASE, EXPERIMENT and one of `wanted`."""
  if not os.path.isfile(path):
    raise ConfigError(f'sweep file {path!r} not found; give e.g. experiments/sweep_lr.py')
  spec = importlib.util.spec_from_file_location('_sweep_module', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for attr in ('BASE', 'EXPERIMENT'):
    if not hasattr(module, attr):
      raise ConfigError(f'sweep file {path}: define {attr} (see transformer/sweeps/runner.py)')
  if not any(hasattr(module, w) for w in wanted):
    raise ConfigError(f'sweep file {path}: define {" or ".join(f"{w}()" for w in wanted)} '
                      '(see transformer/sweeps/runner.py)')
  return module


class Sweep:
  """A loaded sweep file: base config, experiment, the runs (each a dict of overrides + name)."""

  def __init__(self, path, extra_overrides=None, module=None):
    module = module or load_module(path)
    self.path, self.base, self.experiment = path, module.BASE, module.EXPERIMENT
    fixed, extra = getattr(module, 'OVERRIDES', {}), dict(extra_overrides or {})
    self.extra_overrides = extra
    runs = list(module.sweep())
    if not runs:
      raise ConfigError(f'sweep file {path}: sweep() returned no runs')
    varies = lambda k: k not in SPECIAL_KEYS and len({repr(x.get(k)) for x in runs}) > 1
    self.swept_keys = list(dict.fromkeys(k for r in runs for k in r if varies(k)))
    # TensorBoard's HParams dashboard lists these first (and the family when configs differ)
    first = (['model.family'] if len({r.get('config') for r in runs}) > 1 else []) + \
        self.swept_keys
    self.runs, seen = [], set()
    for i, r in enumerate(runs):
      name = run_name(r, self.swept_keys)
      if name in seen:
        name = f'{name},{i}'
      seen.add(name)
      overrides = {**fixed, 'log.hparams_first': tuple(first),
                   **{k: v for k, v in r.items() if k != 'config'}, **extra,
                   'run_name': name, 'experiment': self.experiment}
      self.runs.append({'name': name, 'config': r.get('config', self.base),
                        'overrides': overrides, 'swept': {k: r.get(k) for k in self.swept_keys}})

  def load_config(self, run):
    """The validated config of one run (a bad override fails here, before anything runs)."""
    return config_lib.load(run['config'], run['overrides'])

  def command(self, run, workdir):
    return train_command(run['config'], run['overrides'], workdir)


# -- running ----------------------------------------------------------------------------------
def finished_step(run_dir):
  """The last step a run's checkpoints reached (orbax names finished step dirs by the step)."""
  ckpt = os.path.join(run_dir, 'checkpoints')
  steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
  return max(steps, default=None)


def _write_status(run_dir, **status):
  os.makedirs(run_dir, exist_ok=True)
  with atomic_write(os.path.join(run_dir, STATUS_FILE)) as tmp, open(tmp, 'w') as f:
    json.dump(status, f, indent=2)


def _tail(path, lines=5):
  try:
    with open(path, errors='replace') as f:
      text = [l.rstrip() for l in f.readlines() if l.strip()]
  except OSError:
    return ''
  errors = [l for l in text if l.startswith('error:') or 'Error' in l]
  return (errors[-1] if errors else ' | '.join(text[-lines:]))[-500:]


@dataclasses.dataclass
class Job:
  """One run for `execute`: its name, directory, command and (when known) last step."""
  name: str
  run_dir: str
  argv: list
  steps: int | None = None


@dataclasses.dataclass
class _Running:
  job: Job
  proc: subprocess.Popen
  started: float
  log_file: Any


def _start(job, env, log):
  os.makedirs(job.run_dir, exist_ok=True)
  log_file = open(os.path.join(job.run_dir, LOG_FILE), 'a')   # pylint: disable=consider-using-with
  _write_status(job.run_dir, status='running', command=shlex.join(job.argv), started=time.time())
  log(f'[sweep] start  {job.name}')
  proc = subprocess.Popen(job.argv, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
  return _Running(job, proc, time.time(), log_file)


def _finish(r, log):
  """The status of a job that exited: done, failed (with its error line) or interrupted."""
  r.log_file.close()
  job, status, error = r.job, 'done', ''
  if r.proc.returncode != 0:
    status, error = 'failed', _tail(os.path.join(job.run_dir, LOG_FILE))
  elif job.steps is not None and (finished_step(job.run_dir) or 0) < job.steps:
    status, error = 'interrupted', 'stopped before its last step; run the sweep again to resume'
  _write_status(job.run_dir, status=status, returncode=r.proc.returncode, error=error,
                started=r.started, seconds=round(time.time() - r.started, 1),
                command=shlex.join(job.argv))
  log(f'[sweep] {status:<6} {job.name} ({time.time() - r.started:.0f}s)' +
      (f': {error}' if error else ''))
  return status


def _interrupt(r):
  """Stop a running job with SIGTERM (the trainer saves a checkpoint) and mark it interrupted."""
  r.proc.terminate()
  try:
    r.proc.wait(timeout=300)
  except subprocess.TimeoutExpired:
    r.proc.kill()
    r.proc.wait()
  r.log_file.close()
  _write_status(r.job.run_dir, status='interrupted', returncode=r.proc.returncode,
                error='stopped by a signal; run the sweep again to resume',
                started=r.started, command=shlex.join(r.job.argv))


def execute(jobs, parallel=1, poll_s=0.5, log=print):
  """Run `jobs` (a list of Job) as subprocesses, `parallel` at a time; a failure stops nothing.

  Writes <run_dir>/train.log (stdout + stderr) and <run_dir>/sweep_status.json ('running', then
  'done' or 'failed' with the return code and the error line; 'interrupted' when it exited
  cleanly before its checkpoints reached `steps`). Ctrl-C or SIGTERM stops the running jobs with
  SIGTERM (the trainer saves a checkpoint) and marks them 'interrupted'. Returns {name: status}.
  """
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
  pending, running, outcome = list(jobs), {}, {}
  try:
    while pending or running:
      while pending and len(running) < max(1, parallel):
        job = pending.pop(0)
        running[job.name] = _start(job, env, log)
      for name in [n for n, r in running.items() if r.proc.poll() is not None]:
        outcome[name] = _finish(running.pop(name), log)
      time.sleep(poll_s if running else 0)
  except KeyboardInterrupt:
    for name, r in running.items():
      _interrupt(r)
      outcome[name] = 'interrupted'
    raise
  return outcome


def run(sweep, workdir, *, parallel=1, max_runs=None, index=None, log=print):
  """Run the sweep's runs that have not reached their last step; returns {name: status}.

  Completed runs are 'skipped'; at most `max_runs` are started (the rest stay 'pending');
  `index` runs only that run (one Slurm array task). A run whose config is invalid is 'failed'
  with the error and the others go on; when every run's config is invalid (an unknown key in
  BASE or OVERRIDES, say) nothing runs and the error is raised.
  """
  selected = sweep.runs if index is None else [sweep.runs[index]]
  configs = {}
  for r in selected:
    try:
      configs[r['name']] = sweep.load_config(r)
    except ConfigError as e:
      configs[r['name']] = e
  errors = [c for c in configs.values() if isinstance(c, ConfigError)]
  if errors and len(errors) == len(selected):
    raise ConfigError(f'sweep file {sweep.path}: {errors[0]}')
  jobs, outcome = [], {}
  for r in selected:
    config = configs[r['name']]
    out = os.path.join(workdir, sweep.experiment, r['name'])
    if isinstance(config, ConfigError):
      outcome[r['name']] = 'failed'
      _write_status(out, status='failed', returncode=None, error=f'error: {config}')
      log(f'[sweep] failed {r["name"]}: error: {config}')
      continue
    reached = finished_step(out)
    if reached is not None and reached >= optim.total_steps(config):
      outcome[r['name']] = 'skipped'
      log(f'[sweep] skip   {r["name"]} (reached step {reached})')
      if read_status(out).get('status') != 'done':
        _write_status(out, status='done', returncode=0, error='')
    elif max_runs is not None and len(jobs) >= max_runs:
      outcome[r['name']] = 'pending'
    else:
      jobs.append(Job(r['name'], out, sweep.command(r, os.path.abspath(workdir)),
                      optim.total_steps(config)))
  outcome.update(execute(jobs, parallel=parallel, log=log))
  return outcome
