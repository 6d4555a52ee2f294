"""Optimizers and learning-rate schedules from `config.opt` (optax)."""

import jax
import optax


def schedule(opt, total_steps):
  """Linear warmup to opt.learning_rate, then cosine / linear decay, rsqrt, or constant."""
  lr, warmup = opt.learning_rate, opt.warmup_steps
  end = lr * opt.end_lr_fraction
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt.end_lr_fraction)
  elif opt.schedule == 'linear':
    after = optax.linear_schedule(lr, end, decay_steps)
  elif opt.schedule == 'rsqrt':  # lr * sqrt(warmup / step) after warmup (the 2017 paper, T5)
    base = max(warmup, 1)
    after = lambda step: lr * (base / (step + base)) ** 0.5
  else:
    after = optax.constant_schedule(lr)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _decay_mask(params):
  """Weight decay on matrices only: no decay on biases, norm scales (ndim <= 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make(opt, total_steps):
  """(optax.GradientTransformation, schedule) for `config.opt`."""
  lr = schedule(opt, total_steps)
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.optimizer == 'adamw':
    parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=_decay_mask))
  else:
    parts.append(optax.adafactor(lr, weight_decay_rate=opt.weight_decay or None,
                                 weight_decay_mask=_decay_mask))
  return optax.chain(*parts), lr
