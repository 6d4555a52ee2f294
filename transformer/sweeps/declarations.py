"""What a sweep file declares: `sweep()` returns runs (lists of {config key: value} dicts), or
`search()` returns a `study(...)` that Optuna explores.

  grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [2, 4]})     # 4 runs
  zipped({'model.d_model': [128, 256], 'model.d_ff': [512, 1024]})          # 2 runs
  sample(8, seed=0, space={'opt.learning_rate': log_uniform(1e-4, 1e-2)})   # 8 draws
  study({'opt.learning_rate': log_uniform(1e-4, 1e-2), 'opt.warmup_steps': integer(0, 200)},
        metric='eval/loss', trials=20, sampler='tpe', pruner='median')     # 20 proposed trials

The distributions (`log_uniform`, `uniform`, `integer`, `choice`) serve both: `sample` draws from
them with a seeded `random.Random`, `study` hands them to Optuna as its own distributions.
"""

import dataclasses
import inspect
import itertools
import math
import random
from typing import Any

from transformer.errors import ConfigError

SAMPLERS = {'tpe': 'TPESampler', 'random': 'RandomSampler', 'grid': 'GridSampler'}
PRUNERS = {'median': 'MedianPruner', 'successive_halving': 'SuccessiveHalvingPruner',
           'hyperband': 'HyperbandPruner', 'none': 'NopPruner'}
DIRECTIONS = {'min': 'minimize', 'max': 'maximize', 'minimize': 'minimize',
              'maximize': 'maximize'}
# metrics whose default direction is 'max' (GLUE's: f1, mcc, pearson, spearman)
HIGHER_IS_BETTER = ('accuracy', 'bleu', 'rouge', 'f1', 'mcc', 'pearson', 'spearman')


def grid(axes):
  """Every combination of the values: grid({'a': [1, 2], 'b': [3, 4]}) -> 4 runs, 'b' fastest."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def zipped(axes):
  """Values taken together: zipped({'a': [1, 2], 'b': [3, 4]}) -> [{a: 1, b: 3}, {a: 2, b: 4}]."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise ConfigError(f'sweep zipped(): every list needs the same length, got '
                      f'{ {k: len(v) for k, v in axes.items()} }')
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


# -- distributions ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
  """low..high, uniform or log-uniform, float or int (`integer`); callable as a draw from rng."""
  low: float
  high: float
  log: bool = False
  integer: bool = False

  def __call__(self, rng):
    if self.integer:
      if self.log:
        return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
      return rng.randint(int(self.low), int(self.high))
    if self.log:
      return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
    return float(rng.uniform(self.low, self.high))

  def __str__(self):
    return (f'{"integer" if self.integer else "log_uniform" if self.log else "uniform"}'
            f'({self.low!r}, {self.high!r}{", log=True" if self.log and self.integer else ""})')

  def problem(self):
    """Why the range is unusable (a text naming no key), or None."""
    name = str(self)
    kind = int if self.integer else (int, float)
    if not all(isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v)
               for v in (self.low, self.high)):
      return f'{name}: the bounds must be finite {"integers" if self.integer else "numbers"}'
    if self.low >= self.high:
      return f'{name}: empty range; give low < high (a fixed value belongs in OVERRIDES)'
    if self.log and self.low <= 0:
      return f'{name}: a log range needs bounds > 0'
    return None

  def optuna(self):
    import optuna  # pylint: disable=import-outside-toplevel
    if self.integer:
      return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
    return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)

  def values(self):
    """The finite list of values (a grid axis), or None for a continuous range."""
    return list(range(int(self.low), int(self.high) + 1)) if self.integer and not self.log \
        else None

  def decode(self, value):
    return int(value) if self.integer else float(value)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of `options`; values Optuna cannot store (tuples) travel as their repr."""
  options: tuple

  def __call__(self, rng):
    return self.options[rng.randrange(len(self.options))]

  def __str__(self):
    return f'choice({list(self.options)!r})'

  def problem(self):
    if not self.options:
      return 'choice([]): empty; give at least one value'
    if len({self._encode(v) for v in self.options}) < len(self.options):
      return f'choice({list(self.options)!r}): a value is given twice'
    return None

  @staticmethod
  def _encode(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)

  def optuna(self):
    import optuna  # pylint: disable=import-outside-toplevel
    return optuna.distributions.CategoricalDistribution([self._encode(v) for v in self.options])

  def values(self):
    return [self._encode(v) for v in self.options]

  def decode(self, value):
    return {self._encode(v): v for v in self.options}[value]


def log_uniform(low, high):
  """Log-uniform between low and high, both > 0 (learning rates)."""
  return Range(low, high, log=True)


def uniform(low, high):
  return Range(low, high)


def integer(low, high, log=False):
  """An int in [low, high] (both included); log=True draws log-uniformly (widths)."""
  return Range(low, high, log=log, integer=True)


def choice(values):
  return Choice(tuple(values))


def _check_distribution(key, dist, where):
  if not isinstance(dist, (Range, Choice)):
    raise ConfigError(f'{where}: `{key}={dist!r}` is not a distribution; use log_uniform, '
                      'uniform, integer or choice (fixed values go in OVERRIDES)')
  problem = dist.problem()
  if problem:
    raise ConfigError(f'{where}: `{key}`: {problem}')


def sample(n, seed, space):
  """n runs drawn from `space` ({key: distribution or fixed value}); same seed, same runs."""
  for key, dist in space.items():
    if isinstance(dist, (Range, Choice)):
      _check_distribution(key, dist, 'sweep sample()')
  rng = random.Random(seed)
  return [{k: d(rng) if callable(d) else d for k, d in space.items()} for _ in range(n)]


# -- searches -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Study:
  """A search declaration (see `study`); `direction` is Optuna's 'minimize' or 'maximize'."""
  space: dict
  metric: str
  direction: str
  trials: int
  sampler: str
  pruner: str
  seed: int
  sampler_options: dict
  pruner_options: dict

  def grid(self):
    """{key: [values]}: the grid of the 'grid' sampler."""
    return {k: d.values() for k, d in self.space.items()}


def study(space, *, metric='eval/loss', direction=None, trials=None, sampler='tpe',
          pruner='median', seed=0, sampler_options=None, pruner_options=None):
  """A search over `space` ({config key: distribution}) that optimises `metric`.

  metric: a scalar the run logs (`eval/loss`, `eval/accuracy`, `train/loss`, ...), reported to
    the study at every eval; direction 'min' or 'max' (default: 'max' for accuracy, BLEU and
    ROUGE, else 'min'). trials: how many trials the study runs (default 20; for 'grid', the grid
    size). sampler: 'tpe' (default), 'random' or 'grid' (every value of each `choice` / `integer`).
    pruner: 'median' (default), 'successive_halving', 'hyperband' or 'none'. The *_options are
    keyword arguments of Optuna's class (e.g. sampler_options={'n_startup_trials': 5},
    pruner_options={'n_startup_trials': 3, 'n_warmup_steps': 200}). Errors are ConfigErrors.
  """
  where = 'search study()'
  if not isinstance(space, dict) or not space:
    raise ConfigError(f'{where}: the space must be a non-empty dict of config key -> distribution')
  for key, dist in space.items():
    if not isinstance(key, str) or key in ('config', 'run_name', 'experiment'):
      raise ConfigError(f'{where}: {key!r} cannot be searched; give config keys like '
                        "'opt.learning_rate'")
    _check_distribution(key, dist, where)
  if direction is None:
    direction = 'max' if any(w in metric for w in HIGHER_IS_BETTER) else 'min'
  if direction not in DIRECTIONS:
    raise ConfigError(f"{where}: direction={direction!r}; choose 'min' or 'max'")
  _pick(where, 'sampler', sampler, SAMPLERS, sampler_options)
  _pick(where, 'pruner', 'none' if pruner is None else pruner, PRUNERS, pruner_options)
  trials = _trials(where, sampler, space, trials)
  return Study(dict(space), metric, DIRECTIONS[direction], trials, sampler,
               'none' if pruner is None else pruner, seed, dict(sampler_options or {}),
               dict(pruner_options or {}))


def _pick(where, kind, name, table, options):
  """`name` is a key of `table` and `options` binds to the Optuna class's keyword arguments."""
  if name not in table:
    raise ConfigError(f'{where}: {kind}={name!r}; choose one of {", ".join(table)}')
  import optuna  # pylint: disable=import-outside-toplevel
  cls = getattr(getattr(optuna, f'{kind}s'), table[name])
  try:
    inspect.signature(cls).bind_partial(**(options or {}))
  except TypeError as e:
    raise ConfigError(f'{where}: {kind}_options={options!r} for optuna.{kind}s.{cls.__name__}: '
                      f'{e}') from None


def _trials(where, sampler, space, trials: Any):
  if sampler == 'grid':
    continuous = [k for k, d in space.items() if d.values() is None]
    if continuous:
      raise ConfigError(f"{where}: sampler='grid' needs choice() or integer() values; "
                        f'{continuous[0]} is continuous')
    size = math.prod(len(d.values()) for d in space.values())
    if trials is not None and trials > size:
      raise ConfigError(f'{where}: trials={trials} is more than the {size} grid points')
    trials = size if trials is None else trials
  trials = 20 if trials is None else trials
  if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
    raise ConfigError(f'{where}: trials={trials!r}; give a positive integer')
  return trials
