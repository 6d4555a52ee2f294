"""Loading configs (`configs/<family>.py:<size>` plus `--config.a.b=v` overrides) and validating
them once, before anything runs. Every failure is a one-line ConfigError naming the key.
"""

import ast
import importlib.util
import math
import os
import sys

import ml_collections

from transformer import objectives
from transformer.errors import ConfigError
from transformer.models.decoding import Spec
from transformer.models.hparams import HParams
from transformer.monitoring.writer import flatten_config
from transformer.objectives import metrics as metrics_lib
from transformer.monitoring import profiler
from transformer.training import optim, sharding

SECTIONS = ('model', 'objective', 'data', 'train', 'opt', 'mesh', 'checkpoint', 'log')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_file(spec):
  """'configs/gpt2.py:small' -> get_config('small') of that file (the argument is optional)."""
  path, _, arg = spec.partition(':')
  if not os.path.exists(path) and os.path.exists(os.path.join(REPO, path)):
    path = os.path.join(REPO, path)
  if not os.path.isfile(path):
    raise ConfigError(f'--config {spec}: no such file {path!r}; use e.g. configs/gpt2.py:tiny')
  rel = os.path.relpath(os.path.abspath(path), REPO)
  name = os.path.splitext(rel if not rel.startswith('..') else os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name.replace(os.sep, '.'), path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    return module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise ConfigError(str(e)) from None


def parse_value(text, current):
  """Parse an override string into the type of the value it replaces."""
  if isinstance(current, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError('expected true or false')
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, (tuple, list)):
    nested = _literal(text)
    if nested is not None:   # Python syntax, e.g. "(('mlp', 'tensor'),)" or "(2, 1, 4)"
      if current and isinstance(current[0], float):
        nested = tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) else x
                       for x in nested)
      if current and not all(isinstance(x, type(current[0])) for x in nested):
        raise ValueError(f'expected items like {current[0]!r}')
      return type(current)(nested)
    items = [x for x in text.strip('()[] ').split(',') if x.strip()]
    kind = type(current[0]) if current else str
    return type(current)(parse_value(x.strip(), kind()) for x in items)
  return text


def _literal(text):
  """A tuple/list written as a Python literal whose items are tuples, numbers or quoted strings
  (nested: tuples of tuples); None when the text is not one (then items are split on commas)."""
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    return None
  if not isinstance(value, (tuple, list)):
    return None
  freeze = lambda v: tuple(freeze(x) for x in v) if isinstance(v, (tuple, list)) else v
  return freeze(value)


def apply_overrides(config, overrides):
  """Apply {'train.steps': '100', ...} (strings or typed values); unknown keys are errors."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for i, name in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise ConfigError(f'unknown config key {".".join(parents[:i + 1])!r} in --config.{key}; '
                          f'top-level sections are {", ".join(SECTIONS)}')
      node = node[name]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f'unknown config key --config.{key}; see configs/common.py for every key')
    current = node[leaf]
    if isinstance(value, str) and not isinstance(current, str):
      try:
        value = parse_value(value, current)
      except ValueError:
        raise ConfigError(f'--config.{key}={value!r}: expected a {type(current).__name__} '
                          f'like {current!r}') from None
    elif not isinstance(value, type(current)) and not (
        isinstance(current, float) and isinstance(value, int)):
      raise ConfigError(f'--config.{key}={value!r}: expected a {type(current).__name__} '
                        f'like {current!r}')
    node[leaf] = value
  return config


def load(spec, overrides=None):
  """Load a config file and apply overrides, then validate it."""
  config = load_file(spec)
  apply_overrides(config, overrides or {})
  validate(config)
  return config


def _warn_if_warmup_outlasts_the_run(config):
  """One warning line when a linear warmup does not end inside the run: the learning rate then
  never reaches opt.learning_rate."""
  opt, run = config.opt, config.train
  if not opt.warmup_steps or opt.schedule == 'constant_rsqrt':  # a flat warmup is at its peak
    return
  steps = optim.total_steps(config)
  if opt.warmup_steps < steps:
    return
  length = f'train.tokens={run.tokens}, {steps} steps' if run.tokens else f'train.steps={steps}'
  print(f'warning: `opt.warmup_steps={opt.warmup_steps}` is not shorter than the run ({length}): '
        f'the learning rate peaks at {max(steps - 1, 0) / opt.warmup_steps:.0%} of '
        f'opt.learning_rate={opt.learning_rate:g}; shorten the warmup, e.g. '
        f'--config.opt.warmup_steps={max(steps // 10, 1)}', file=sys.stderr)


def _choose(key, value, allowed):
  if value not in allowed:
    raise ConfigError(f'`{key}={value!r}`: choose one of {", ".join(allowed)}')


def _positive(key, value, allow_zero=False):
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f'`{key}={value!r}`: must be '
                      f'{"non-negative" if allow_zero else "positive"}')


def _finite(key, value, ok, wanted, example):
  if not (math.isfinite(value) and ok(value)):
    raise ConfigError(f'`{key}={value!r}`: must be a finite number {wanted}; '
                      f'e.g. --config.{key}={example}')


def validate(config):
  """Check every section once; raises ConfigError (one line, names the key and the fix)."""
  for section in SECTIONS:
    if section not in config:
      raise ConfigError(f'config has no {section!r} section; start from configs/common.py')
  _choose('objective', config.objective, tuple(objectives.REGISTRY))
  HParams.from_config({**config.model, 'vocab_size': config.model.vocab_size or
                       config.data.vocab_size}, vocabulary=objectives.reads_text(config.objective))
  _validate_data(config)
  objectives.check_config(config)
  _validate_train(config.train)
  _validate_opt(config)
  _validate_mesh(config.mesh)
  _validate_log(config)
  _validate_decode(config.log.decode)
  _validate_score(config)
  if 'profile_steps' in config.log:
    profiler.check(config.log.profile_steps)
  _positive('checkpoint.every', config.checkpoint.every)
  _positive('checkpoint.keep', config.checkpoint.keep)
  if config.checkpoint.init_from and not os.path.isdir(config.checkpoint.init_from):
    raise ConfigError(f'`checkpoint.init_from={config.checkpoint.init_from!r}`: not a '
                      'directory; give a run directory or one written by ./launch.sh import-hf')
  return config


def _validate_data(config):
  data = config.data
  if objectives.reads_text(config.objective):   # a model without text has no vocabulary
    _positive('data.vocab_size', data.vocab_size)
  _positive('data.seq_len', data.seq_len)
  _positive('data.targets_len', data.targets_len, allow_zero=True)
  if config.model.positions == 'learned' and max(data.seq_len,
                                                 data.targets_len) > config.model.max_len:
    raise ConfigError(f'`data.seq_len={data.seq_len}`: longer than the model.max_len='
                      f'{config.model.max_len} learned positions; shorten it or raise max_len')


def _validate_train(train):
  _positive('train.batch_size', train.batch_size)
  _positive('train.steps', train.steps, allow_zero=train.tokens > 0)
  _positive('train.tokens', train.tokens, allow_zero=True)
  _positive('train.eval_every', train.eval_every)
  _positive('train.eval_steps', train.eval_steps, allow_zero=True)
  _positive('train.log_every', train.log_every)
  _finite('train.z_loss', train.z_loss, lambda v: v >= 0, '>= 0 (0: off)', 1e-4)


def _validate_opt(config):
  opt = config.opt
  _choose('opt.optimizer', opt.optimizer, optim.OPTIMIZERS)
  _choose('opt.schedule', opt.schedule, optim.SCHEDULES)
  _choose('opt.decay_shape', opt.get('decay_shape', '1-sqrt'), optim.DECAY_SHAPES)
  _finite('opt.decay_fraction', opt.get('decay_fraction', 0.2), lambda v: 0 < v <= 1,
          'in (0, 1]', 0.2)
  if opt.optimizer in optim.SCHEDULE_FREE and opt.schedule != 'constant':
    raise ConfigError(f'`opt.schedule={opt.schedule}`: {opt.optimizer} needs no decay (it '
                      'averages its iterates instead); use --config.opt.schedule=constant (the '
                      'warmup stays opt.warmup_steps)')
  if config.model.get('mup_base_width', 0) and opt.optimizer not in optim.MUP_OPTIMIZERS:
    raise ConfigError(f'`opt.optimizer={opt.optimizer}`: muP (model.mup_base_width) defines '
                      f'learning-rate multipliers for {" and ".join(optim.MUP_OPTIMIZERS)} '
                      '(Adam-like updates); use one of them or set model.mup_base_width=0')
  _finite('opt.learning_rate', opt.learning_rate, lambda v: v > 0, '> 0', 3e-4)
  _finite('opt.weight_decay', opt.weight_decay, lambda v: v >= 0, '>= 0 (0: none)', 0.1)
  _finite('opt.end_lr_fraction', opt.end_lr_fraction, lambda v: 0 <= v <= 1, 'in [0, 1]', 0.1)
  _finite('opt.b1', opt.b1, lambda v: 0 <= v < 1, 'in [0, 1)', 0.9)
  if opt.optimizer in optim.SCHEDULE_FREE and not opt.b1:
    raise ConfigError(f'`opt.b1=0`: {opt.optimizer} interpolates with b1, which must be > 0; '
                      'e.g. --config.opt.b1=0.9')
  _finite('opt.b2', opt.b2, lambda v: 0 <= v < 1, 'in [0, 1)', 0.95)
  _finite('opt.eps', opt.eps, lambda v: v > 0, '> 0', 1e-8)
  _finite('opt.grad_clip_norm', opt.grad_clip_norm, lambda v: v >= 0, '>= 0 (0: no clipping)',
          1.0)
  _positive('opt.warmup_steps', opt.warmup_steps, allow_zero=True)
  _warn_if_warmup_outlasts_the_run(config)
  _positive('opt.accumulation_steps', opt.accumulation_steps)
  if config.train.batch_size % opt.accumulation_steps:
    raise ConfigError(f'`opt.accumulation_steps={opt.accumulation_steps}`: must divide '
                      f'train.batch_size={config.train.batch_size}')


def _validate_log(config):
  unknown = [k for k in config.log.hparams_first if k not in flatten_config(config)]
  if unknown:
    raise ConfigError(f'`log.hparams_first={tuple(config.log.hparams_first)}`: {unknown[0]!r} '
                      "is not a config key; name keys as in --config.KEY, e.g. "
                      "--config.log.hparams_first=\"('opt.learning_rate',)\"")


def _validate_score(config):
  score = config.log.get('score') or {}
  for key in ('file', 'choices'):
    path = score.get(key)
    if path and not os.path.isfile(path):
      raise ConfigError(f'`log.score.{key}={path}`: no such file; give an existing file or '
                        "leave it '' (off)")
  if score.get('file') and not config.train.eval_steps:
    raise ConfigError('`train.eval_steps=0`: the score file is scored at the last eval; give '
                      'eval batches (e.g. --config.train.eval_steps=1) or log.score.file=\'\'')


def _validate_decode(decode):
  _positive('log.decode.examples', decode.examples, allow_zero=True)
  _positive('log.decode.max_new_tokens', decode.max_new_tokens, allow_zero=True)
  chosen = [m.strip() for m in decode.metrics.split(',')]
  if decode.metrics != 'auto' and (not all(chosen) or set(chosen) - set(metrics_lib.METRICS)):
    raise ConfigError(f'`log.decode.metrics={decode.metrics!r}`: choose auto or a comma list of '
                      f'{", ".join(metrics_lib.METRICS)}')
  Spec.from_mapping(decode).validate('log.decode.')


def _validate_mesh(mesh):
  _choose('mesh.preset', mesh.preset, tuple(sharding.PRESETS))
  if len(mesh.shape) != 3 or list(mesh.shape).count(-1) > 1:
    raise ConfigError(f'`mesh.shape={tuple(mesh.shape)}`: give 3 sizes (data, fsdp, tensor) '
                      'with at most one -1')
  sharding.config_rules(mesh)  # each rule a (logical axis, mesh axis) pair, one per axis
