"""Optimizers and learning-rate schedules from `config.opt` (optax).

`opt.weight_decay` means one thing for both optimizers: decoupled decay scaled by the schedule,
w <- w - lr(t) * wd * w (AdamW's definition; at lr 0 nothing decays). It applies to weight
matrices and embedding tables (token, token-type and learned position tables, as GPT-2 /
nanoGPT and BERT do) and never to biases, norm parameters or T5's relative-position bias table:
the parameter's name decides, not its rank (q/k/v biases are [heads, head_dim], and with
scan_layers every parameter has one more, stacked, axis).
"""

import math

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('adamw', 'adafactor')
SCHEDULES = ('cosine', 'linear', 'rsqrt', 'constant', 'constant_rsqrt')   # all after warmup
DECAYED = ('kernel', 'embedding', 'position_embedding')   # parameter names that get weight decay
NOT_DECAYED_IN = ('relative_bias',)   # modules whose tables are biases (T5 relative positions)


def total_steps(config):
  """The run's optimizer steps: train.steps, or train.tokens at full packing (tokens divided by
  batch_size x seq_len, rounded up)."""
  run = config.train
  if run.tokens:
    return math.ceil(run.tokens / (run.batch_size * config.data.seq_len))
  return run.steps


def schedule(opt, total_steps):
  """Linear warmup to opt.learning_rate, then cosine / linear decay, rsqrt, or constant;
  'constant_rsqrt' is flat at opt.learning_rate for warmup_steps, then rsqrt (T5)."""
  lr, warmup = opt.learning_rate, opt.warmup_steps
  end = lr * opt.end_lr_fraction
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == 'constant_rsqrt':  # T5: 1/sqrt(max(step, 1e4)) is lr 1e-2, warmup 1e4
    base = max(warmup, 1)
    return lambda step: lr * jnp.sqrt(base / jnp.maximum(step, base))
  if opt.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt.end_lr_fraction)
  elif opt.schedule == 'linear':
    after = optax.linear_schedule(lr, end, decay_steps)
  elif opt.schedule == 'rsqrt':  # lr * sqrt(warmup / step) after a linear warmup (the 2017 paper)
    base = max(warmup, 1)
    after = lambda step: lr * (base / (step + base)) ** 0.5
  else:
    after = optax.constant_schedule(lr)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decays(path):
  """Whether the parameter at `path` (a key path of the params tree) gets weight decay."""
  names = [str(getattr(k, 'key', k)) for k in path]
  return names[-1] in DECAYED and not any(n in NOT_DECAYED_IN for n in names)


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


def make(opt, total_steps):
  """(optax.GradientTransformation, schedule) for `config.opt`."""
  lr = schedule(opt, total_steps)
  return transform(opt, lr), lr


def transform(opt, lr):
  """The optax transformation of `config.opt` under the learning-rate schedule `lr`."""
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.optimizer == 'adamw':
    parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=_decay_mask))
  else:  # optax adds Adafactor's decay after the lr scaling: scale the rate by the schedule
    wd = opt.weight_decay
    parts.append(optax.adafactor(lr, weight_decay_rate=(lambda step: wd * lr(step)) if wd else None,
                                 weight_decay_mask=_decay_mask))
  return optax.chain(*parts)
