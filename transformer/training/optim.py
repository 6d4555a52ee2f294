"""Optimizers and learning-rate schedules from `config.opt` (optax).

`opt.weight_decay` means one thing for every optimizer: decoupled decay scaled by the schedule,
w <- w - lr(t) * wd * w (AdamW's definition; at lr 0 nothing decays). It applies to weight
matrices and embedding tables (token, token-type and learned position tables, as GPT-2 /
nanoGPT and BERT do) and never to biases, norm parameters or T5's relative-position bias table:
the parameter's name decides, not its rank (q/k/v biases are [heads, head_dim], and with
scan_layers every parameter has one more, stacked, axis).

  adamw, adafactor      optax's, with that decay
  muon                  optax.contrib.muon on the 2-D hidden matrices (every 'kernel' inside the
                        blocks, `MUON_MATRICES`), AdamW on the rest (embeddings, output and
                        classification heads, norms, biases) as Muon's authors recommend (Jordan
                        2024; Liu et al. 2025). A kernel is one matrix, [in..., out...], whatever
                        its rank: q/k/v [embed, heads, kv] are [embed, heads*kv], the attention
                        output [heads, kv, embed] is [heads*kv, embed], and a scanned stack
                        [layers, ...] is one matrix per layer (the layer axis a batch axis).
                        Updates are scaled to AdamW's RMS (`MUON_RMS`), so one opt.learning_rate
                        and opt.weight_decay serve both parts
  lion                  optax.lion (b1, b2 from opt.b1 / opt.b2)
  schedule_free_adamw   optax.contrib.schedule_free around AdamW without momentum (opt.b1 is the
                        interpolation beta); it needs no decay, so it takes opt.schedule=constant
                        (with its warmup). Evaluate at the averaged iterate x: `eval_params`

muP (model.mup_base_width; Yang et al. 2022, Table 8, Adam): the hidden matrices' updates are
multiplied by 1 / width ratio (`optax.masked(optax.scale(...))` after the optimizer, so their
learning rate and their decoupled decay are lr / ratio); embeddings, the output head, biases and
norms keep opt.learning_rate. Hidden (`mup_hidden`, by name like the decay mask): every 'kernel'
inside the blocks and the heads' d_model x d_model transforms (MLM transform, pooler). Defined
for the optimizers whose updates are entrywise-normalised like Adam's (`MUP_OPTIMIZERS`: adamw,
lion); adafactor (its updates scale with the parameters' RMS), muon (orthogonalised matrix
updates, a width scaling of their own) and schedule-free (the multiplier would have to act inside
its averaging) are refused by the config check.

Schedules, all after a linear warmup of opt.warmup_steps: cosine, linear, rsqrt, constant,
constant_rsqrt (T5: flat, then rsqrt), and wsd: warmup-stable-decay (Hu et al. 2024; Hägele et
al. 2024), flat at opt.learning_rate until the last opt.decay_fraction of the run, then down to
end_lr_fraction in opt.decay_shape (linear, cosine, or 1-sqrt: Hägele et al.'s best).
"""

import math

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('adamw', 'adafactor', 'muon', 'lion', 'schedule_free_adamw')
SCHEDULES = ('cosine', 'linear', 'rsqrt', 'constant', 'constant_rsqrt', 'wsd')   # after warmup
DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')   # opt.decay_shape of wsd's final decay
SCHEDULE_FREE = ('schedule_free_adamw',)        # optimizers that take opt.schedule=constant only
DECAYED = ('kernel', 'embedding', 'position_embedding')   # parameter names that get weight decay
NOT_DECAYED_IN = ('relative_bias',)   # modules whose tables are biases (T5 relative positions)
BLOCKS = 'layers'    # the module holding the blocks (loop: layers/<i>/..., scanned: layers/...)
MUON_MATRICES = ('kernel',)   # ... and the names of its parameters that Muon updates
MUON_RMS = 0.2   # Muon's update RMS matched to AdamW's (Liu et al. 2025, "Muon is scalable")
MUP_OPTIMIZERS = ('adamw', 'lion')   # Adam-like updates: muP's Adam column holds
MUP_HIDDEN_HEADS = ('transform', 'pooler')   # heads' d_model x d_model matrices: hidden too


def total_steps(config):
  """The run's optimizer steps: train.steps, or train.tokens at full packing (tokens divided by
  batch_size x seq_len, rounded up)."""
  run = config.train
  if run.tokens:
    return math.ceil(run.tokens / (run.batch_size * config.data.seq_len))
  return run.steps


def schedule(opt, total_steps):
  """Linear warmup to opt.learning_rate, then cosine / linear decay, rsqrt, constant or wsd;
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
  elif opt.schedule == 'wsd':
    after = _stable_then_decay(opt, decay_steps, total_steps)
  else:
    after = optax.constant_schedule(lr)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _stable_then_decay(opt, after_warmup, total_steps):
  """wsd after its warmup: flat at opt.learning_rate, then the last round(decay_fraction x
  total_steps) steps (at most the steps after the warmup) from there to lr x end_lr_fraction."""
  lr = opt.learning_rate
  end = lr * opt.end_lr_fraction
  decay = min(max(round(opt.decay_fraction * total_steps), 1), after_warmup)
  if opt.decay_shape == 'linear':
    down = optax.linear_schedule(lr, end, decay)
  elif opt.decay_shape == 'cosine':
    down = optax.cosine_decay_schedule(lr, decay, alpha=opt.end_lr_fraction)
  else:   # 1-sqrt (Hägele et al. 2024, eq. 1): lr x (1 - sqrt(t / decay)), floored at `end`
    down = lambda step: end + (lr - end) * (1 - jnp.sqrt(jnp.clip(step / decay, 0.0, 1.0)))
  return optax.join_schedules([optax.constant_schedule(lr), down], [after_warmup - decay])


def decays(path):
  """Whether the parameter at `path` (a key path of the params tree) gets weight decay."""
  names = _names(path)
  return names[-1] in DECAYED and not any(n in NOT_DECAYED_IN for n in names)


def _names(path):
  return [str(getattr(k, 'key', k)) for k in path]


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


def muon_dims(path, leaf):
  """Muon's view of the parameter at `path` as a matrix (optax.contrib.MuonDimensionNumbers:
  the input axes are reduced, the rest are outputs, axes named in neither are a batch of
  matrices), or None for a parameter that AdamW updates (see the module docstring)."""
  names = _names(path)
  if BLOCKS not in names[:-1] or names[-1] not in MUON_MATRICES:
    return None
  after = names[names.index(BLOCKS) + 1]
  lead = 0 if after.isdigit() else 1            # scanned: [layers, ...], one matrix per layer
  inputs = 2 if names[-2] == 'out' else 1       # the attention output reads [heads, kv]
  return optax.contrib.MuonDimensionNumbers(tuple(range(lead, lead + inputs)),
                                            tuple(range(lead + inputs, leaf.ndim)))


def mup_hidden(path):
  """Whether muP treats the parameter at `path` as a hidden matrix (lr / width ratio)."""
  names = _names(path)
  return names[-1] in MUON_MATRICES and (BLOCKS in names[:-1] or
                                         any(n in MUP_HIDDEN_HEADS for n in names[:-1]))


def _mup_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: mup_hidden(path), params)


def _muon_labels(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: 'muon' if muon_dims(path, leaf) else 'adamw', params)


def _muon_dims_tree(params):
  return jax.tree_util.tree_map_with_path(muon_dims, params)


def make(opt, total_steps, mup_ratio=1.0):
  """(optax.GradientTransformation, schedule) for `config.opt` (muP's width ratio: HParams)."""
  lr = schedule(opt, total_steps)
  return transform(opt, lr, mup_ratio), lr


def transform(opt, lr, mup_ratio=1.0):
  """The optax transformation of `config.opt` under the learning-rate schedule `lr`; with a muP
  width ratio other than 1, the hidden matrices' updates divided by it."""
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  parts.append(_OPTIMIZERS[opt.optimizer](opt, lr))
  if mup_ratio != 1.0:
    if opt.optimizer not in MUP_OPTIMIZERS:
      raise ValueError(f'muP is defined here for {MUP_OPTIMIZERS}, not {opt.optimizer}')
    parts.append(optax.masked(optax.scale(1.0 / mup_ratio), _mup_mask))
  return optax.chain(*parts)


def _adamw(opt, lr):
  return optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=_decay_mask)


def _adafactor(opt, lr):
  """optax adds Adafactor's decay after the lr scaling: the rate is scaled by the schedule."""
  wd = opt.weight_decay
  return optax.adafactor(lr, weight_decay_rate=(lambda step: wd * lr(step)) if wd else None,
                         weight_decay_mask=_decay_mask)


def _muon(opt, lr):
  """Muon on the block matrices, AdamW (the same decay mask) on everything else. Muon's own
  AdamW part decays every parameter it gets, so the split is made here (optax.partition) and
  optax.contrib.muon only ever sees matrices."""
  matrices = optax.contrib.muon(lr, eps=opt.eps, weight_decay=opt.weight_decay,  # all kernels
                                consistent_rms=MUON_RMS,
                                muon_weight_dimension_numbers=_muon_dims_tree)
  return optax.partition({'muon': matrices, 'adamw': _adamw(opt, lr)}, _muon_labels)


def _lion(opt, lr):
  return optax.lion(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=_decay_mask)


def _schedule_free_adamw(opt, lr):
  """optax.contrib.schedule_free_adamw's recipe with the decay mask (it has none of its own)."""
  base = optax.chain(optax.scale_by_rms(decay=opt.b2, eps=opt.eps, eps_in_sqrt=False,
                                        bias_correction=True),
                     optax.add_decayed_weights(opt.weight_decay, _decay_mask),
                     optax.scale_by_learning_rate(lr))
  return optax.contrib.schedule_free(base, learning_rate=lr, b1=opt.b1)


_OPTIMIZERS = {'adamw': _adamw, 'adafactor': _adafactor, 'muon': _muon, 'lion': _lion,
               'schedule_free_adamw': _schedule_free_adamw}


def eval_params(state):
  """The parameters to evaluate a train state {'params', 'opt_state', ...} at: the params, or
  for schedule-free the averaged iterate x (optax.contrib.schedule_free_eval_params; the params
  are its gradient point y)."""
  found = [s for s in jax.tree_util.tree_leaves(state['opt_state'], is_leaf=_is_schedule_free)
           if _is_schedule_free(s)]
  if not found:
    return state['params']
  return jax.jit(optax.contrib.schedule_free_eval_params)(found[0], state['params'])


def _is_schedule_free(node):
  return isinstance(node, optax.contrib.ScheduleFreeState)
