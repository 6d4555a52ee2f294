"""A search: a sweep file whose `search()` returns `study(...)`; Optuna proposes the trials.

  BASE = 'configs/gpt2.py:tiny'
  EXPERIMENT = 'gpt2_search'
  OVERRIDES = {'train.steps': 300}                 # every trial
  def search():
    return study({'opt.learning_rate': log_uniform(1e-4, 3e-2)}, metric='eval/loss', trials=20)

Each trial is one `python -m transformer.train` run of BASE + OVERRIDES + its values (+ any
--config.KEY=VALUE of the command line), named after its number and values
(`t03,lr=3.12e-3`) in <workdir>/<experiment>/. The study lives in `storage` (default SQLite in
<workdir>/<experiment>/study.db), which is the state of record: what ran, what was pruned, what
is left. Counting: a trial that died or was interrupted is FAIL in the study and a WAITING copy
(same values, same run directory, its reported values up to the run's last checkpoint) takes its
place, so it counts once; a trial asked beyond `trials` by a racing worker is marked `surplus`
(FAIL) and counts nowhere. This module is the bookkeeping; sweeps/worker.py runs the trials.
"""

import copy
import os
import random
import time

import numpy as np
import optuna

from transformer import config as config_lib
from transformer.errors import ConfigError
from transformer.monitoring import writer as tb
from transformer.sweeps import declarations
from transformer.sweeps.runner import finished_step, run_name, train_command
from transformer.sweeps import trial as trial_hook
from transformer.training import optim

STUDY_FILE = 'study.db'
# The scalars a run has in hand after each eval (its latest train window and the eval itself).
REPORTABLE = tuple(t for t in tb.TAGS + tb.OPTIONAL_TAGS
                   if t.split('/')[0] in ('train', 'eval', 'perf') and t != 'perf/compile_seconds')
# Optuna's trial states in the words of the sweep tables and status files.
STATES = {'COMPLETE': 'done', 'PRUNED': 'pruned', 'FAIL': 'failed', 'RUNNING': 'running',
          'WAITING': 'pending'}
MAX_DEATHS = 3     # a trial whose process is killed (or whose worker stops) is retried this often
RUN_ATTRS = ('worker', 'error', 'pruned_at')   # system attrs of one attempt, not copied on retry


class Search:
  """A loaded search file: base config, experiment, the study declaration, where it is stored."""
  kind = 'search'

  def __init__(self, path, module, extra_overrides=None, storage=None):
    self.path, self.base, self.experiment = path, module.BASE, module.EXPERIMENT
    self.fixed = dict(getattr(module, 'OVERRIDES', {}))
    self.extra_overrides = dict(extra_overrides or {})
    self.study = module.search()
    if not isinstance(self.study, declarations.Study):
      raise ConfigError(f'sweep file {path}: search() must return study(...) (from '
                        'transformer.sweeps import study)')
    self.swept_keys = list(self.study.space)
    self.storage = storage
    self.config = self._check()
    self.steps = optim.total_steps(self.config)

  def _check(self):
    """The base config; one-line errors for a bad metric, key or value type in the space."""
    where = f'sweep file {self.path}'
    if self.study.metric not in REPORTABLE:
      raise ConfigError(f'{where}: unknown metric {self.study.metric!r}; choose one of '
                        f'{", ".join(REPORTABLE)}')
    try:
      config = config_lib.load(self.base, {**self.fixed, **self.extra_overrides,
                                           'experiment': self.experiment})
      for key, dist in self.study.space.items():
        for value in _representatives(dist):
          config_lib.apply_overrides(copy.deepcopy(config), {key: value})
    except ConfigError as e:
      raise ConfigError(f'{where}: {e}') from None
    if not config.train.eval_steps:
      raise ConfigError(f'{where}: `train.eval_steps=0`: a search reports {self.study.metric} '
                        'at every eval; give train.eval_steps > 0')
    return config

  # -- one trial ---------------------------------------------------------------------------------
  def values(self, params):
    """{config key: value} of a trial's Optuna params (choices decoded)."""
    return {k: self.study.space[k].decode(v) for k, v in params.items() if k in self.study.space}

  def run_name(self, number, params):
    width = len(str(self.study.trials - 1))
    short = {k: float(f'{v:.3g}') if isinstance(v, float) else v   # 3 significant digits
             for k, v in self.values(params).items()}
    return f't{number:0{width}d},' + run_name(short, self.swept_keys)

  def overrides(self, name, params):
    return {**self.fixed, **self.values(params), **self.extra_overrides, 'run_name': name,
            'experiment': self.experiment}

  def load_config(self, name, params):
    return config_lib.load(self.base, self.overrides(name, params))

  def command(self, name, params, workdir):
    return train_command(self.base, self.overrides(name, params), workdir)

  # -- the study ---------------------------------------------------------------------------------
  def storage_url(self, workdir):
    return self.storage or 'sqlite:///' + os.path.abspath(
        os.path.join(workdir, self.experiment, STUDY_FILE))

  def pruner_spec(self):
    """{'class', 'options'} of the pruner: steps are training steps, the first rung the first eval
    (min_resource = train.eval_every) and Hyperband's last the run's last step."""
    name, options = self.study.pruner, dict(self.study.pruner_options)
    if name in ('successive_halving', 'hyperband'):
      options.setdefault('min_resource', self.config.train.eval_every)
    if name == 'hyperband':
      options.setdefault('max_resource', self.steps)
    return {'class': declarations.PRUNERS[name], 'options': options}

  def sampler(self, seed):
    options = {'seed': seed, **self.study.sampler_options}
    if self.study.sampler == 'grid':
      return _GridSampler(self.study.grid(), seed=options['seed'])
    return getattr(optuna.samplers, declarations.SAMPLERS[self.study.sampler])(**options)

  def open(self, workdir, *, heartbeat=None, create=True):
    """The Optuna study (created on first use). `heartbeat` seconds: this process beats for its
    trials and fails (then retries) trials nobody has beaten for 3 x heartbeat. Its sampler draws
    each trial from the declared seed and the trial's number (`_TrialSeeded`)."""
    trial_hook.quiet_optuna()
    url = self.storage_url(workdir)
    if url.startswith('sqlite:///'):
      if not create and not os.path.exists(url[len('sqlite:///'):]):
        raise ConfigError(f'no study yet at {url}; run the search first')
      os.makedirs(os.path.dirname(url[len('sqlite:///'):]), exist_ok=True)
    beat = {} if heartbeat is None else dict(
        heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
        heartbeat_stale_trial_callback=lambda study, trial: retry(self, workdir, study, trial,
                                                                  died=True))
    study = _create_study(url, beat, study_name=self.experiment,
                          direction=self.study.direction, load_if_exists=True,
                          pruner=trial_hook.make_pruner(self.pruner_spec()))
    self._check_study(study, url)
    seed = self.study.seed
    study.sampler = (self.sampler(seed) if self.study.sampler == 'grid' else   # see _TrialSeeded
                     _TrialSeeded(self.sampler, seed))
    return study

  def _check_study(self, study, url):
    """The stored study optimises what the file declares (else a one-line error)."""
    stored = study.user_attrs.get('metric')
    direction = study.direction.name.lower()
    if stored is None:
      study.set_user_attr('metric', self.study.metric)
    elif stored != self.study.metric or direction != self.study.direction:
      raise ConfigError(f'the study {self.experiment!r} in {shown(url)} '
                        f'optimises {stored} ({direction}), the file says {self.study.metric} '
                        f'({self.study.direction}); use a new EXPERIMENT or delete the study')


def shown(url):
  """The URL to print: its password, if any, as ***."""
  try:
    import sqlalchemy  # pylint: disable=import-outside-toplevel
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
  except Exception:  # pylint: disable=broad-except
    return url


def trial_seed(seed, number):
  """The sampler seed of trial `number` of a study declared with `seed`."""
  return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _TrialSeeded(optuna.samplers.BaseSampler):
  """The declared sampler, made afresh for each trial with `trial_seed(seed, trial.number)`.

  The storage hands out each trial number once, so workers that open a study together (two
  terminals, two machines on one database, Slurm array tasks) draw different trials, while one
  worker on a new study draws the same trials for the same seed. A seed per opening could not
  promise both: two openers at the same trial count cannot tell which of them is first (Optuna's
  study attributes are written last-writer-wins, with no compare-and-set to claim "first").
  The grid sampler keeps the declared seed in every opening: it gives trial n the n-th point of
  a seeded shuffle of the grid, unique per number already, if every opening shuffles alike."""

  def __init__(self, make, seed):
    self._make, self._seed = make, seed
    self._sampler = make(seed)

  def before_trial(self, study, trial):
    self._sampler = self._make(trial_seed(self._seed, trial.number))
    self._sampler.before_trial(study, trial)

  def infer_relative_search_space(self, study, trial):
    return self._sampler.infer_relative_search_space(study, trial)

  def sample_relative(self, study, trial, search_space):
    return self._sampler.sample_relative(study, trial, search_space)

  def sample_independent(self, study, trial, param_name, param_distribution):
    return self._sampler.sample_independent(study, trial, param_name, param_distribution)

  def after_trial(self, study, trial, state, values):
    self._sampler.after_trial(study, trial, state, values)


class _GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid, less its `study.stop()` when the grid is done (only `optimize` may call it;
  here the worker stops at `trials`, which is at most the grid size)."""

  def after_trial(self, study, trial, state, values):
    del study, trial, state, values


def _create_study(url, beat, **kwargs):
  """optuna.create_study on a new RDBStorage of `url`. Workers that start together on a new
  database race to create its tables; the losers try again a few times."""
  import sqlalchemy  # pylint: disable=import-outside-toplevel
  for attempt in range(6):
    try:
      return optuna.create_study(storage=trial_hook.storage(url, **beat), **kwargs)
    except sqlalchemy.exc.DBAPIError as e:   # the database answered: a race, or a real error
      error = e
      time.sleep(0.2 + random.random() * attempt)
    except Exception as e:  # pylint: disable=broad-except
      error = e   # e.g. not a URL, no driver for it
      break
  raise ConfigError(f'--storage {shown(url)}: cannot open the study ({type(error).__name__}: '
                    f'{str(error).splitlines()[0][:200]}); give a SQLAlchemy URL such as '
                    'sqlite:////abs/path/study.db or postgresql://user@host/db')


def _representatives(dist):
  """The values a distribution can take at its edges (each checked against the config)."""
  if isinstance(dist, declarations.Choice):
    return list(dist.options)
  return [dist.decode(dist.low), dist.decode(dist.high)]


# -- counting and retries -------------------------------------------------------------------------
def counted(trials):
  """The trials that count towards `trials`: not superseded by a retry, not surplus."""
  superseded = {n for t in trials for n in t.system_attrs.get('retry_history', ())}
  return [t for t in trials if t.number not in superseded and not t.system_attrs.get('surplus')]


def left_to_start(search, trials):
  """How many trials a worker may still ask for (new ones, or the WAITING retries)."""
  waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
  return max(search.study.trials - len(counted(trials)), 0) + waiting


def is_surplus(search, study, trial):
  """A freshly asked trial is surplus when `trials` trials numbered below it already count."""
  trials = study.get_trials(deepcopy=False)
  return sum(t.number < trial.number for t in counted(trials)) >= search.study.trials


def retry(search, workdir, study, trial, *, died):
  """Queue a WAITING copy of a FAIL trial that died or was interrupted: same values and run name
  (so its run resumes from its checkpoints), the values it reported up to that checkpoint, and
  its retry history. A trial that died MAX_DEATHS times is not retried. Returns the copy's
  number, or None."""
  attrs = {k: v for k, v in trial.system_attrs.items() if k not in RUN_ATTRS}
  attrs['retry_history'] = list(attrs.get('retry_history', [])) + [trial.number]
  attrs.setdefault('failed_trial', trial.number)
  attrs['deaths'] = attrs.get('deaths', 0) + int(died)
  if attrs['deaths'] > MAX_DEATHS:
    return None
  name = trial.user_attrs.get('run_name')
  reached = finished_step(os.path.join(workdir, search.experiment, name)) if name else None
  values = {s: v for s, v in trial.intermediate_values.items() if s <= (reached or 0)}
  study.add_trial(optuna.trial.create_trial(
      state=optuna.trial.TrialState.WAITING, params=trial.params,
      distributions=trial.distributions, user_attrs=trial.user_attrs, system_attrs=attrs,
      intermediate_values=values))
  return max(t.number for t in study.get_trials(deepcopy=False))   # for the log line
