"""What a sweep file's `sweep()` returns: lists of {config key: value} dicts, one per run.

  grid({'opt.learning_rate': [1e-3, 3e-3], 'model.num_layers': [2, 4]})     # 4 runs
  zipped({'model.d_model': [128, 256], 'model.d_ff': [512, 1024]})          # 2 runs
  sample(8, seed=0, space={'opt.learning_rate': log_uniform(1e-4, 1e-2)})   # 8 draws
"""

import itertools
import math
import random

from transformer.errors import ConfigError


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


def log_uniform(low, high):
  """A distribution for `sample`: log-uniform between low and high (learning rates)."""
  return lambda rng: float(math.exp(rng.uniform(math.log(low), math.log(high))))


def uniform(low, high):
  return lambda rng: float(rng.uniform(low, high))


def choice(values):
  values = list(values)
  return lambda rng: values[rng.randrange(len(values))]


def sample(n, seed, space):
  """n runs drawn from `space` ({key: distribution or fixed value}); same seed, same runs."""
  rng = random.Random(seed)
  return [{k: d(rng) if callable(d) else d for k, d in space.items()} for _ in range(n)]
