"""The search trial's hook: a run's metric, reported to the hyperparameter search that started it.

The search runner starts each trial as a normal training run with the environment variable
TRANSFORMER_TRIAL set to a JSON object {"storage": SQLAlchemy URL, "study": name, "trial_id": int,
"number": int, "metric": tag, "pruner": {"class": name in optuna.pruners, "options": {...}}}.
The training entry point puts `TrialHook.from_environment()` first among the loop's hooks
(training/hooks.py). After every eval, process 0 reports the metric at that step to the study and
asks the study's pruner; when it says stop, the trial is marked `pruned_at` = step,
`search/pruned` = 1 joins the eval's scalars (the TensorBoard hook, after this one, logs them),
and `after_eval` returns the line the loop prints before it saves a final checkpoint and exits 0
(the runner then tells the study PRUNED). A trial that reaches its last step logs
`search/pruned` = 0. Without the variable the hook does nothing, so every other run is untouched.
"""

import json
import os

import jax

from transformer.errors import ConfigError, TrainingError
from transformer.training import distributed
from transformer.training.hooks import Hook

ENV = 'TRANSFORMER_TRIAL'


def storage(url, **kwargs):
  """Optuna's RDBStorage of `url`; SQLite waits up to a minute for a lock (several processes
  write the one file: every worker and every trial's reporter)."""
  import optuna  # pylint: disable=import-outside-toplevel
  engine = {'connect_args': {'timeout': 60}} if url.startswith('sqlite') else {}
  return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)


def make_pruner(spec):
  """An Optuna pruner from {'class': 'MedianPruner', 'options': {...}}."""
  import optuna  # pylint: disable=import-outside-toplevel
  return getattr(optuna.pruners, spec['class'])(**spec.get('options', {}))


def quiet_optuna():
  """Optuna's INFO lines and its experimental-feature warnings off (the runner prints its own)."""
  import warnings  # pylint: disable=import-outside-toplevel
  import optuna  # pylint: disable=import-outside-toplevel
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
  warnings.filterwarnings('ignore', message='Heartbeat of storage is supposed to be used')


class TrialHook(Hook):
  """The trial of this run (from TRANSFORMER_TRIAL), or an inactive hook."""

  def __init__(self, spec=None):
    self.spec, self.steps, self.trial = spec, None, None
    self.active = spec is not None

  @classmethod
  def from_environment(cls, env=None):
    text = (os.environ if env is None else env).get(ENV)
    if not text:
      return cls()
    try:
      spec = json.loads(text)
      spec = {**spec, 'trial_id': int(spec['trial_id']), 'number': int(spec['number'])}
      _ = spec['storage'], spec['study'], spec['metric'], spec['pruner']['class']
    except (ValueError, KeyError, TypeError) as e:
      raise ConfigError(f'environment variable {ENV}: not a trial description ({e}); it is set '
                        'by `python -m transformer.sweep` for the runs of a search') from None
    return cls(spec)

  def start(self, session):
    self.steps = session.run.steps
    if self.active and distributed.is_primary():
      import optuna  # pylint: disable=import-outside-toplevel
      quiet_optuna()
      study = optuna.load_study(study_name=self.spec['study'],
                                storage=storage(self.spec['storage']),
                                sampler=optuna.samplers.RandomSampler(),
                                pruner=make_pruner(self.spec['pruner']))
      self.trial = optuna.trial.Trial(study, self.spec['trial_id'])

  @property
  def hparams(self):
    """Extra HParams-dashboard columns of a trial: its study and number."""
    return {'search.study': self.spec['study'], 'search.trial': self.spec['number']} \
        if self.active else {}

  @property
  def metrics(self):
    """Extra metric columns: the searched metric and `search/pruned` (1 pruned, 0 ran out)."""
    return {self.spec['metric']: None, 'search/pruned': None} if self.active else {}

  def after_eval(self, step, result):
    """Report the eval's metric at `step`; the line to stop with, or None to go on."""
    if not self.active:
      return None
    why = self._report(step, result.scalars) if distributed.is_primary() else None
    if jax.process_count() > 1:   # every process stops at the same step
      stop = distributed.allgather_ints([why is not None])[0][0]   # process 0 decides
      why = why or (f'Stopped by the search at step {step}; saved.' if stop else None)
    return why

  def _report(self, step, scalars):
    import optuna  # pylint: disable=import-outside-toplevel
    metric, number = self.spec['metric'], self.spec['number']
    if metric not in scalars:
      raise TrainingError(f'the search optimises {metric!r}, which this run does not log at its '
                          f'evals (it logs {", ".join(sorted(scalars))}); change metric= in the '
                          'sweep file')
    try:
      self.trial.report(float(scalars[metric]), step)
      pruned = step < self.steps and self.trial.should_prune()
      if pruned:
        self.trial.storage.set_trial_system_attr(self.spec['trial_id'], 'pruned_at', step)
    except optuna.exceptions.UpdateFinishedTrialError:
      return (f'Stopped at step {step}: the search already finished trial {number} (its worker '
              'stopped); saved, and the search resumes it as a new trial.')
    if pruned or step >= self.steps:
      scalars['search/pruned'] = float(pruned)
    return (f'Pruned by the search at step {step} ({metric} {float(scalars[metric]):.4f}); '
            'saved.') if pruned else None
