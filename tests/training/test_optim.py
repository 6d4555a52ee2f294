"""Optimizer and schedules (transformer/optim.py): which parameters weight decay touches, that
`opt.weight_decay` means the same decoupled, learning-rate-scaled decay for AdamW and Adafactor,
and the schedules' values (T5's constant-then-rsqrt)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from transformer import config as config_lib
from transformer import models
from transformer.training import optim

SMALL = dict(vocab_size=64, num_layers=2, d_model=32, num_heads=4, head_dim=8, d_ff=64, max_len=16,
             dropout_rate=0.0, attention_dropout_rate=0.0)
LR, WD = 0.1, 0.1


def _params(spec, scan_layers, head='lm'):
  model_config = config_lib.load_file(spec).model
  model_config.update(SMALL, scan_layers=scan_layers)
  model = models.build(model_config, head=head, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  # Biases start at zero, where decay would not show: move every parameter off its init.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.5 * jax.random.normal(k, p.shape, p.dtype)
                                   for p, k in zip(leaves, keys)])


def _opt(**overrides):
  opt = common.base_config().opt
  opt.update(dict(learning_rate=LR, weight_decay=WD, warmup_steps=0, schedule='constant',
                  grad_clip_norm=1.0), **overrides)
  return opt


def _zero_grad_steps(tx, params, steps=1):
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(steps):
    updates, state = tx.update(zeros, state, params)
    params = optax.apply_updates(params, updates)
  return params


def _flat(tree):
  return {'/'.join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _kind(path):
  """What a parameter is, from its name: what the no-decay rule is about."""
  name = path.split('/')[-1]
  if 'relative_bias' in path:
    return 'relative_bias'
  if name in ('bias', 'scale'):
    return 'norm' if 'norm' in path.split('/')[-2] else 'bias'
  if name in ('kernel', 'embedding', 'position_embedding'):
    return 'weight'
  raise AssertionError(f'a parameter of unknown kind: {path}')


# BERT (biases, embedding norm, MLM head, token types), GPT-2 (q/k/v biases [heads, head_dim],
# learned positions), T5 (RMSNorm scales, relative-bias table, no biases).
FAMILIES = ['configs/bert.py:tiny', 'configs/gpt2.py:tiny', 'configs/t5.py:tiny']


@pytest.mark.parametrize('optimizer', ['adamw', 'adafactor'])
@pytest.mark.parametrize('scan_layers', [False, True], ids=['loop', 'scan'])
@pytest.mark.parametrize('spec', FAMILIES, ids=lambda s: s.split('/')[1].split('.')[0])
def test_weight_decay_spares_biases_norms_and_relative_bias_whatever_their_rank(
    spec, scan_layers, optimizer):
  """A zero-gradient step: weights (kernels, embedding and position tables) shrink by exactly
  lr * wd; every bias (q/k/v biases are [heads, head_dim], stacked ones one rank more), every norm
  parameter and T5's relative-bias table stay as they were."""
  params = _params(spec, scan_layers)
  tx, _ = optim.make(_opt(optimizer=optimizer), total_steps=10)
  before, after = _flat(params), _flat(_zero_grad_steps(tx, params))
  kinds = {path: _kind(path) for path in before}
  assert {'weight', 'bias' if 't5' not in spec else 'relative_bias', 'norm'} <= set(kinds.values())
  if scan_layers:   # the stacked layers really are one rank up: a rank rule cannot tell them apart
    assert any(v.ndim == 3 and kinds[k] == 'bias' for k, v in before.items()) or 't5' in spec
  for path, kind in kinds.items():
    if kind == 'weight':
      np.testing.assert_allclose(after[path], before[path] * (1 - LR * WD), rtol=1e-6,
                                 err_msg=path)
    else:
      np.testing.assert_array_equal(after[path], before[path], err_msg=f'{kind} {path} decayed')


def test_classification_head_weights_decay_and_its_biases_do_not():
  params = _params('configs/bert.py:tiny', False, head='classification')
  tx, _ = optim.make(_opt(), total_steps=10)
  before, after = _flat(params), _flat(_zero_grad_steps(tx, params))
  for path in ('classifier/classifier/kernel', 'classifier/pooler/kernel'):
    np.testing.assert_allclose(after[path], before[path] * (1 - LR * WD), rtol=1e-6)
  for path in ('classifier/classifier/bias', 'classifier/pooler/bias'):
    np.testing.assert_array_equal(after[path], before[path])


@pytest.mark.parametrize('optimizer', ['adamw', 'adafactor'])
def test_weight_decay_at_learning_rate_zero_changes_nothing(optimizer):
  """Decoupled decay is scaled by the schedule: 10 zero-gradient steps at lr 0 (e.g. the start
  of a warmup) keep every weight as it was, for Adafactor as for AdamW."""
  params = _params('configs/gpt2.py:tiny', False)
  tx = optim.transform(_opt(optimizer=optimizer), optax.constant_schedule(0.0))
  after = _flat(_zero_grad_steps(tx, params, steps=10))
  for path, value in _flat(params).items():
    np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_adafactor_and_adamw_decay_alike_along_the_schedule():
  """Zero gradients through a warmup: both shrink each weight by prod(1 - lr(t) * wd)."""
  params = _params('configs/gpt2.py:tiny', False)
  opt = dict(schedule='cosine', warmup_steps=4, learning_rate=0.05)
  expected = np.prod([1 - WD * _at(optim.schedule(_opt(**opt), 10), t) for t in range(6)])
  results = {}
  for optimizer in ('adamw', 'adafactor'):
    tx, _ = optim.make(_opt(optimizer=optimizer, **opt), total_steps=10)
    results[optimizer] = _flat(_zero_grad_steps(tx, params, steps=6))
  w0 = _flat(params)['decoder/layers/0/mlp/wi/kernel']
  for optimizer, after in results.items():
    np.testing.assert_allclose(after['decoder/layers/0/mlp/wi/kernel'], w0 * expected, rtol=1e-5,
                               err_msg=optimizer)


# ------------------------------------------------------------------- schedules


def _at(lr, step):
  return float(lr(jnp.asarray(step, jnp.int32)))   # the trainer calls it with an int32 step


def test_constant_rsqrt_is_flat_for_warmup_steps_then_rsqrt():
  lr = optim.schedule(_opt(schedule='constant_rsqrt', learning_rate=0.02, warmup_steps=100), 1000)
  for step, want in ((0, 0.02), (1, 0.02), (99, 0.02), (100, 0.02), (400, 0.01), (900, 0.02 / 3)):
    np.testing.assert_allclose(_at(lr, step), want, rtol=1e-6, err_msg=str(step))


@pytest.mark.parametrize('size', ['small', 'base', 'v1_1_small', 'v1_1_base'])
def test_t5_configs_use_the_papers_schedule(size):
  """T5 (Raffel et al. 2020, sec. 3.1.2): lr = 1 / sqrt(max(step, 10^4))."""
  config = config_lib.load_file(f'configs/t5.py:{size}')
  lr = optim.schedule(config.opt, 500_000)
  for step in (0, 1, 5_000, 9_999, 10_000, 40_000, 250_000):
    np.testing.assert_allclose(_at(lr, step), 1 / np.sqrt(max(step, 1e4)), rtol=1e-5,
                               err_msg=str(step))


def test_linear_warmup_rsqrt_is_unchanged():
  """The 2017 paper's schedule: a linear warmup to the peak, then lr * sqrt(warmup / step)."""
  lr = optim.schedule(_opt(schedule='rsqrt', learning_rate=0.01, warmup_steps=100), 1000)
  np.testing.assert_allclose([_at(lr, s) for s in (0, 50, 100, 400)],
                             [0.0, 0.005, 0.01, 0.005], rtol=1e-6)
