"""Optimizer and schedules (transformer/optim.py): which parameters weight decay touches, that
`opt.weight_decay` means the same decoupled, learning-rate-scaled decay for every optimizer,
Muon's split (block matrices, one per scanned layer; AdamW for the rest), an exact resume of
each optimizer's state through the checkpointer, schedule-free's eval parameters, the
schedules' values (T5's constant-then-rsqrt, warmup-stable-decay) and the one-line errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from tests.e2e.sharding_helper import FakeTokenizer, TINY
from transformer import config as config_lib
from transformer import models
from transformer import objectives
from transformer import train
from transformer.errors import ConfigError
from transformer.training import checkpoint, optim, sharding
from transformer.training.trainer import Trainer

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
  state, update = tx.init(params), jax.jit(tx.update)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(steps):
    updates, state = update(zeros, state, params)
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


@pytest.mark.parametrize('optimizer', [o if o in ('adamw', 'adafactor', 'muon') else pytest.param(o, marks=pytest.mark.slow)
                                       for o in optim.OPTIMIZERS])
@pytest.mark.parametrize('scan_layers', [False, True], ids=['loop', 'scan'])
@pytest.mark.parametrize('spec', FAMILIES, ids=lambda s: s.split('/')[1].split('.')[0])
def test_weight_decay_spares_biases_norms_and_relative_bias_whatever_their_rank(
    spec, scan_layers, optimizer):
  """A zero-gradient step: weights (kernels, embedding and position tables) shrink by exactly
  lr * wd; every bias (q/k/v biases are [heads, head_dim], stacked ones one rank more), every norm
  parameter and T5's relative-bias table stay as they were (schedule-free: to float rounding,
  its y is recomputed from x and z; a decay would move them by lr * wd = 1e-2)."""
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
    elif optimizer in optim.SCHEDULE_FREE:
      np.testing.assert_allclose(after[path], before[path], rtol=1e-6, atol=1e-7,
                                 err_msg=f'{kind} {path} decayed')
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


@pytest.mark.parametrize('optimizer', optim.OPTIMIZERS)
def test_weight_decay_at_learning_rate_zero_changes_nothing(optimizer):
  """Decoupled decay is scaled by the schedule: 10 zero-gradient steps at lr 0 (e.g. the start
  of a warmup) keep every weight as it was, for every optimizer as for AdamW."""
  params = _params('configs/gpt2.py:tiny', False)
  tx = optim.transform(_opt(optimizer=optimizer), optax.constant_schedule(0.0))
  after = _flat(_zero_grad_steps(tx, params, steps=10))
  for path, value in _flat(params).items():
    if optimizer in optim.SCHEDULE_FREE:   # y recomputed from x and z: float rounding only
      np.testing.assert_allclose(after[path], value, rtol=1e-6, atol=1e-7, err_msg=path)
    else:
      np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_adafactor_muon_lion_and_adamw_decay_alike_along_the_schedule():
  """Zero gradients through a warmup: all shrink each weight by prod(1 - lr(t) * wd)."""
  params = _params('configs/gpt2.py:tiny', False)
  opt = dict(schedule='cosine', warmup_steps=4, learning_rate=0.05)
  expected = np.prod([1 - WD * _at(optim.schedule(_opt(**opt), 10), t) for t in range(6)])
  results = {}
  for optimizer in ('adamw', 'adafactor', 'muon', 'lion'):
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


def test_wsd_is_flat_until_the_last_decay_fraction_then_decays_in_its_shape():
  """Warmup 10 of 100 steps, decay_fraction 0.2: flat at the peak from step 10 to 80, then down
  to end_lr_fraction x lr at step 100 (Hägele et al. 2024: linear, cosine, 1-sqrt)."""
  lr, end = 0.01, 0.001
  at_90 = {'linear': end + (lr - end) * 0.5, 'cosine': end + (lr - end) * 0.5,
           '1-sqrt': end + (lr - end) * (1 - 0.5 ** 0.5)}
  at_85 = {'linear': end + (lr - end) * 0.75, 'cosine': end + (lr - end) * (1 + np.cos(np.pi / 4)) / 2,
           '1-sqrt': end + (lr - end) * 0.5}
  for shape in optim.DECAY_SHAPES:
    fn = optim.schedule(_opt(schedule='wsd', learning_rate=lr, warmup_steps=10, end_lr_fraction=0.1,
                             decay_fraction=0.2, decay_shape=shape), 100)
    got = [_at(fn, s) for s in (0, 5, 10, 50, 80, 85, 90, 100, 120)]
    np.testing.assert_allclose(got, [0.0, lr / 2, lr, lr, lr, at_85[shape], at_90[shape], end, end],
                               rtol=1e-5, err_msg=shape)


def test_wsd_decay_longer_than_the_run_after_warmup_starts_at_the_warmup_end():
  fn = optim.schedule(_opt(schedule='wsd', learning_rate=0.01, warmup_steps=50, decay_fraction=1.0,
                           decay_shape='linear', end_lr_fraction=0.0), 100)
  np.testing.assert_allclose([_at(fn, s) for s in (50, 75, 100)], [0.01, 0.005, 0.0], atol=1e-7)


# ------------------------------------------------------------------- muon


def _labels(params):
  return {path: ('muon' if optim.muon_dims(path_keys, leaf) else 'adamw')
          for (path_keys, leaf), path in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                             _flat(params))}


@pytest.mark.parametrize('scan_layers', [False, True], ids=['loop', 'scan'])
@pytest.mark.parametrize('spec,head', [('configs/gpt2.py:tiny', 'lm'), ('configs/t5.py:tiny', 'lm'),
                                       ('configs/bert.py:tiny', 'classification')],
                         ids=['gpt2', 't5', 'bert_classifier'])
def test_muon_takes_the_block_matrices_and_adamw_everything_else(spec, head, scan_layers):
  """Muon: every kernel inside the blocks; AdamW: embeddings and position tables, heads (the
  classifier and pooler), norms, biases, T5's relative-bias table."""
  labels = _labels(_params(spec, scan_layers, head=head))
  for path, label in labels.items():
    names = path.split('/')
    want = 'muon' if 'layers' in names and names[-1] == 'kernel' else 'adamw'
    assert label == want, path
  assert 'muon' in labels.values()
  if head == 'classification':
    assert labels['classifier/classifier/kernel'] == labels['classifier/pooler/kernel'] == 'adamw'


def test_muon_updates_adamw_parameters_exactly_as_adamw():
  params = _params('configs/gpt2.py:tiny', True)
  grads = jax.tree.map(lambda p: jnp.cos(p * 7.0), params)
  updates = {}
  for optimizer in ('muon', 'adamw'):
    tx = optim.transform(_opt(optimizer=optimizer), optax.constant_schedule(LR))
    updates[optimizer] = _flat(tx.update(grads, tx.init(params), params)[0])
  labels = _labels(params)
  for path, label in labels.items():
    if label == 'adamw':
      np.testing.assert_allclose(updates['muon'][path], updates['adamw'][path], rtol=1e-6,
                                 err_msg=path)
    else:
      assert not np.allclose(updates['muon'][path], updates['adamw'][path]), path


def _stacked(loop_tree):
  """A loop model's params tree with its layers stacked as scan_layers stores them."""
  layers = loop_tree['decoder']['layers']
  return {**loop_tree, 'decoder': {**loop_tree['decoder'], 'layers': jax.tree.map(
      lambda *xs: jnp.stack(xs), *[layers[i] for i in sorted(layers)])}}


def test_muon_orthogonalizes_each_scanned_layer_as_its_own_matrix():
  """A scanned [layers, in..., out...] kernel gets, layer by layer, the update the loop model's
  own kernel gets (so no matrix spans two layers, and none is left to AdamW for its rank); the
  update of one layer's [32, 64] MLP kernel is orthogonalized (its singular values close
  together) where the gradient's are spread."""
  loop = _params('configs/gpt2.py:tiny', False)
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape), loop)
  tx = optim.transform(_opt(optimizer='muon', weight_decay=0.0), optax.constant_schedule(LR))
  loop_updates = tx.update(grads, tx.init(loop), loop)[0]
  scanned = _stacked(loop)
  scan_updates = tx.update(_stacked(grads), tx.init(scanned), scanned)[0]
  np.testing.assert_allclose(np.asarray(scan_updates['decoder']['layers']['self_attention']['out']
                                        ['kernel'][1]),
                             np.asarray(loop_updates['decoder']['layers'][1]['self_attention']
                                        ['out']['kernel']), rtol=1e-4, atol=1e-7)
  for a, b in zip(jax.tree.leaves(_stacked(loop_updates)), jax.tree.leaves(scan_updates)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)
  singular = np.linalg.svd(np.asarray(scan_updates['decoder']['layers']['mlp']['wi']['kernel'][0]),
                           compute_uv=False)
  spread = np.linalg.svd(np.asarray(grads['decoder']['layers'][0]['mlp']['wi']['kernel']),
                         compute_uv=False)
  assert singular.max() / singular.min() < 2 < spread.max() / spread.min(), (singular, spread)


# ------------------------------------------------------------------- resume, eval parameters


def _trainer(optimizer):
  config = config_lib.load('configs/gpt2.py:tiny', {
      **TINY, 'opt.optimizer': optimizer, 'opt.schedule': 'constant', 'opt.warmup_steps': '2',
      'model.scan_layers': 'true', 'train.batch_size': '4', 'mesh.shape': '(1, 1, 1)'})
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  return Trainer.create(config, objectives.get(config, FakeTokenizer()), mesh, total_steps=8)


def _batches(n):
  rng = np.random.default_rng(0)
  for _ in range(n):
    tokens = rng.integers(39, 128, (4, 32)).astype(np.int32)
    yield {'targets': jnp.asarray(tokens), 'targets_segment_ids': jnp.ones_like(tokens),
           'targets_positions': jnp.asarray(np.broadcast_to(np.arange(32, dtype=np.int32),
                                                            tokens.shape))}


@pytest.mark.parametrize('optimizer', ['muon', pytest.param('lion', marks=pytest.mark.slow),
                                       pytest.param('schedule_free_adamw', marks=pytest.mark.slow)])
def test_training_resumed_from_a_checkpoint_equals_training_straight_through(optimizer, tmp_path):
  """2 steps, save (orbax, the run's Checkpointer), restore into the state's abstract tree
(shardings included) and take 2 more: bit-identical to 4 steps in one go."""
  batches = list(_batches(4))
  trainer = _trainer(optimizer)
  step = jax.jit(trainer.train_step)
  state = trainer.init_state()
  for i, batch in enumerate(batches):
    state, _ = step(state, batch)
    if i == 1:
      with checkpoint.Checkpointer(tmp_path, every=1, keep=1, async_save=False) as saver:
        saver.save(2, state, data_position={}, force=True)
      abstract = Trainer.abstract(state)
  with checkpoint.Checkpointer(tmp_path, every=1, keep=1, async_save=False) as loader:
    at, resumed, _ = loader.restore(abstract)
  assert at == 2
  for batch in batches[2:]:
    resumed, _ = step(resumed, batch)
  assert jax.tree.structure(resumed) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_schedule_free_is_evaluated_at_its_averaged_iterate():
  """eval_params: the params for every other optimizer; schedule-free's x (not the gradient
  point y it trains at), as optax.contrib.schedule_free_eval_params computes it."""
  params = _params('configs/gpt2.py:tiny', False)
  grads = jax.tree.map(lambda p: jnp.sin(p * 5.0), params)
  for optimizer in ('adamw', 'schedule_free_adamw'):
    tx = optim.transform(_opt(optimizer=optimizer), optax.constant_schedule(LR))
    opt_state, current = tx.init(params), params
    for _ in range(3):
      updates, opt_state = tx.update(grads, opt_state, current)
      current = optax.apply_updates(current, updates)
    got = optim.eval_params({'params': current, 'opt_state': opt_state, 'step': 3})
    if optimizer == 'adamw':
      assert got is current
      continue
    want = optax.contrib.schedule_free_eval_params(opt_state[-1], current)
    for path, value in _flat(want).items():
      np.testing.assert_allclose(_flat(got)[path], value, rtol=1e-6, atol=1e-8, err_msg=path)
    assert not np.allclose(_flat(got)['decoder/layers/0/mlp/wi/kernel'],
                           _flat(current)['decoder/layers/0/mlp/wi/kernel'])


# ------------------------------------------------------------------- one-line errors

BAD_OPT = [
    ({'opt.optimizer': 'sgd'}, 'opt.optimizer', 'muon, lion, schedule_free_adamw'),
    ({'opt.schedule': 'wsd', 'opt.decay_fraction': '0'}, 'opt.decay_fraction', '(0, 1]'),
    ({'opt.schedule': 'wsd', 'opt.decay_fraction': '1.5'}, 'opt.decay_fraction', '(0, 1]'),
    ({'opt.schedule': 'wsd', 'opt.decay_shape': 'sqrt'}, 'opt.decay_shape', '1-sqrt'),
    ({'opt.optimizer': 'schedule_free_adamw'}, 'opt.schedule', 'opt.schedule=constant'),
    ({'opt.optimizer': 'schedule_free_adamw', 'opt.schedule': 'constant', 'opt.b1': '0'},
     'opt.b1', 'opt.b1=0.9'),
]


@pytest.mark.parametrize('overrides,key,hint', BAD_OPT, ids=[k for _, k, _ in BAD_OPT])
def test_bad_optimizer_settings_are_one_line_errors_and_nothing_is_written(
    overrides, key, hint, tmp_path, capsys):
  with pytest.raises(ConfigError) as e:
    config_lib.load('configs/gpt2.py:tiny', overrides)
  message = str(e.value)
  assert message.startswith(f'`{key}=') and '\n' not in message and hint in message, message
  with pytest.raises(SystemExit) as exit_:
    train.main(['--config', 'configs/gpt2.py:tiny', f'--workdir={tmp_path}'] +
               [f'--config.{k}={v}' for k, v in overrides.items()])
  err = capsys.readouterr().err.strip()
  assert exit_.value.code == 2 and err.startswith(f'error: `{key}=') and '\n' not in err, err
  assert not os.listdir(tmp_path)
