"""Mixture of experts (models/moe.py, issue 27 item 4).

  * references: one expert with top-1 equals the dense MLP with the same weights (capacity and
    dropless dispatch, plain and gated, with biases); capacity dropping against a hand-worked
    routing (padding takes no capacity; first choices queue before second choices); the
    load-balancing loss, the router z-loss and the loads against their formulas;
  * packed rows equal their examples one by one, cached decoding equals the full pass (decoder,
    encoder, encoder-decoder), a scanned stack with a dense/MoE period equals the unrolled one;
  * the trainer adds the weighted router losses and returns the router statistics as metrics;
    accounting counts total and active parameters and active FLOPs;
  * bad values are one line naming the key (and the other key); export-hf refuses.
The sharded step against one device is tests/models/test_knobs_sharding.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.test_attention import (EXAMPLES, TARGETS, TOL, _assert_packed_equals_separate,
                                         _check_decoder_generation, _forward, _pack_rows,
                                         _separate_rows)
from tests.models.test_knobs import _config
from transformer import config as config_lib
from transformer import models, train
from transformer.errors import ConfigError
from transformer.hf import architectures
from transformer.models import decoding, layers, moe
from transformer.monitoring import accounting
from transformer.training import console


def _hp(**overrides):
  return models.HParams.from_config(_config(**overrides))


def _draw(seed, shape, scale=1.0):
  return jax.random.normal(jax.random.key(seed), shape) * scale


# ------------------------------------------------------------------- references


@pytest.mark.parametrize('activation,capacity_factor', [
    ('gelu', 1.0), pytest.param('swiglu', 0.0, marks=pytest.mark.slow)])
def test_one_expert_top_1_equals_the_dense_mlp(activation, capacity_factor):
  hp = _hp(moe_experts=1, moe_top_k=1, moe_capacity_factor=capacity_factor,
           activation=activation)
  layer = moe.MoE(hp, rngs=nnx.Rngs(0))
  dense = layers.MLP(32, 64, activation=activation, use_bias=True, dropout_rate=0.0,
                     init_std=0.1, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
  names = ('wi_0', 'wi_1') if layer.gated else ('wi',)
  for i, name in enumerate(names):   # the dense weights, biases not zero, as the one expert's
    getattr(dense, name).bias.value = _draw(10 + i, (64,))
    getattr(layer, name).value = getattr(dense, name).kernel.value[None]
    layer.bi.value = layer.bi.value.at[i, 0].set(getattr(dense, name).bias.value)
  dense.wo.bias.value = _draw(9, (32,))
  layer.wo.value, layer.bo.value = dense.wo.kernel.value[None], dense.wo.bias.value[None]
  x = _draw(3, (2, 7, 32))
  np.testing.assert_allclose(_call(layer, x), dense(x), atol=1e-5, rtol=1e-5)
  assert float(layer.stats.value[moe.DROPPED]) == 0.0


_call = nnx.jit(lambda layer, x, mask=None: layer(x, mask=mask))   # one compile, not one per op


def _routed_layer(**overrides):
  """A MoE layer whose router sends a token to expert 0 when x[0] > x[1], else to expert 1."""
  hp = _hp(d_model=4, num_heads=1, num_kv_heads=1, d_ff=8, moe_experts=2, **overrides)
  layer = moe.MoE(hp, rngs=nnx.Rngs(0))
  layer.router.kernel.value = jnp.array([[1., -1.], [-1., 1.], [0., 0.], [0., 0.]])
  return layer


def test_capacity_drops_the_hand_worked_tokens():
  """6 tokens, 2 experts, top-1, capacity ceil(0.5 * 6 * 1 / 2) = 2. Token 0 is padding that
  would go to expert 0; tokens 1, 2, 4 go to expert 0, tokens 3, 5 to expert 1. Expert 0 takes
  1 and 2 and drops 4; had padding taken a place, 2 would be dropped instead."""
  layer = _routed_layer(moe_capacity_factor=0.5)
  assert moe.capacity(6, layer.hp) == 2
  to_0, to_1 = [2., 0., 0.5, -0.5], [0., 2., 0.5, -0.5]
  x = jnp.array([[to_0, to_0, to_0, to_1, to_0, to_1]])
  mask = jnp.array([[False, True, True, True, True, True]])
  got = np.asarray(_call(layer, x, mask))
  dropless = _routed_layer(moe_capacity_factor=0.0)
  nnx.update(dropless, nnx.state(layer, nnx.Param))
  every = np.asarray(_call(dropless, x, mask))   # nothing dropped: every real token computed
  kept = np.array([False, True, True, True, False, True])
  np.testing.assert_allclose(got[0, kept], every[0, kept], atol=1e-6)
  np.testing.assert_array_equal(got[0, ~kept], 0.0)
  assert np.all(np.abs(every[0, 4]) > 0)
  np.testing.assert_allclose(layer.stats.value[moe.DROPPED], 1 / 5, rtol=1e-6)
  np.testing.assert_allclose(layer.stats.value[:2], [3 / 5, 2 / 5], rtol=1e-6)   # loads


def test_second_choices_queue_after_every_first_choice():
  """3 experts A B C, top-2, capacity 2. First choices A A A B, second B B C A: rank 1 fills
  A with tokens 0 and 1 (2 dropped) and puts 3 in B; rank 2 gives B token 0 (full now: 1 is
  dropped), C token 2, and A is full for 3. By position alone, 0's and 1's second choices
  would have filled B before token 3's first choice."""
  layer = moe.MoE(_hp(moe_experts=3, moe_top_k=2), rngs=nnx.Rngs(0))
  experts = jnp.array([[[0, 1], [0, 1], [0, 2], [1, 0]]])
  place, kept = layer.slots(experts, jnp.ones((1, 4), bool), cap=2)
  np.testing.assert_array_equal(kept[0], [[True, True], [True, False], [False, True],
                                          [True, False]])
  np.testing.assert_array_equal(place[0], [[0, 1], [1, 2], [2, 0], [0, 3]])   # dropped too


@pytest.mark.parametrize('top_k', [pytest.param(1, marks=pytest.mark.slow), 2])
def test_router_losses_are_their_formulas_over_the_real_tokens(top_k):
  e = 4
  layer = moe.MoE(_hp(moe_experts=e, moe_top_k=top_k, init_std=0.5), rngs=nnx.Rngs(2))
  x = _draw(5, (2, 6, 32))
  mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]], bool)
  _call(layer, x, jnp.asarray(mask))
  logits = np.asarray(x, np.float64)[mask] @ np.asarray(layer.router.kernel.value, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  chosen = np.argsort(-probs, axis=-1)[:, :top_k]
  f = np.bincount(chosen.ravel(), minlength=e) / chosen.size   # share of assignments
  p = probs.mean(0)
  log_z = np.log(np.exp(logits).sum(-1))
  stats = np.asarray(layer.stats.value)
  np.testing.assert_allclose(stats[:e], f, rtol=1e-6)
  np.testing.assert_allclose(stats[moe.AUX], e * np.sum(f * p), rtol=1e-5)   # Switch eq. 4
  np.testing.assert_allclose(stats[moe.Z], np.mean(log_z ** 2), rtol=1e-5)  # ST-MoE eq. 5


# ------------------------------------------------------------------- packed, cached, scanned

MOE = dict(moe_experts=4, moe_top_k=2, moe_capacity_factor=2.0, moe_shared_experts=1)
# capacity 2.0 = E / k: every expert can take a whole row, so nothing drops in either layout


@pytest.mark.parametrize('capacity_factor', [2.0, pytest.param(0.0, marks=pytest.mark.slow)])
def test_decoder_packed_equals_separate_and_cached_equals_full(capacity_factor):
  model = models.build(_config(**{**MOE, 'moe_capacity_factor': capacity_factor}),
                       rngs=nnx.Rngs(0))
  packed = _forward(model, *_pack_rows(EXAMPLES))
  _assert_packed_equals_separate(packed, _forward(model, *_separate_rows(EXAMPLES)), EXAMPLES)
  prompt = jax.random.randint(jax.random.key(4), (2, 5), 4, 37)
  _check_decoder_generation(model, prompt, n=6, prefix_lm=False)


@pytest.mark.slow
def test_encoder_and_encoder_decoder_packed_equal_separate_and_cached_equals_full():
  encoder = models.build(_config(family='encoder', moe_every=2, **MOE), rngs=nnx.Rngs(0))
  _assert_packed_equals_separate(_forward(encoder, *_pack_rows(EXAMPLES)),
                                 _forward(encoder, *_separate_rows(EXAMPLES)), EXAMPLES)
  model = models.build(_config(family='encoder_decoder', **MOE), rngs=nnx.Rngs(0))

  def run(layout):
    inputs, in_seg, in_pos = layout(EXAMPLES)
    targets, t_seg, t_pos = layout(TARGETS, length=10)
    dec_in = jnp.where(t_pos == 0, 0, jnp.roll(targets, 1, axis=1))
    return _forward(model, inputs, dec_in, in_seg, in_pos, t_seg, t_pos)
  _assert_packed_equals_separate(run(_pack_rows), run(_separate_rows), TARGETS)
  inputs = jax.random.randint(jax.random.key(6), (2, 7), 4, 37)
  in_seg = jnp.array([[1] * 7, [1] * 5 + [0] * 2], jnp.int32)
  tokens, logits = decoding.generate_seq2seq(model, inputs, in_seg, max_new_tokens=5,
                                             eos_id=-1, return_logits=True)
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
  np.testing.assert_allclose(logits, _forward(model, inputs, dec_in, in_seg), atol=TOL,
                             rtol=TOL)


def _copy_into_periods(loop_model, scan_model, period):
  """The unrolled model's layer r * period + j into unit r, block j of the scanned model."""
  loop_flat = dict(nnx.to_flat_state(nnx.state(loop_model, nnx.Param)))
  new = {}
  for path, var in nnx.to_flat_state(nnx.state(scan_model, nnx.Param)):
    if 'layers' not in path:
      new[path] = var.replace(loop_flat[path][...])
      continue
    i = path.index('layers')
    j, rest = path[i + 2], path[i + 3:]
    new[path] = var.replace(jnp.stack([loop_flat[path[:i + 1] + (r * period + j,) + rest][...]
                                       for r in range(var.shape[0])]))
  nnx.update(scan_model, nnx.State.from_flat_path(new))


@pytest.mark.parametrize('remat', ['none', pytest.param('full', marks=pytest.mark.slow)])
def test_scanned_dense_moe_period_equals_the_unrolled_stack(remat):
  knobs = dict(num_layers=4, moe_every=2, local_window=2, attention_pattern='1:1', **MOE)
  loop = models.build(_config(**knobs), rngs=nnx.Rngs(0))
  scan = models.build(_config(scan_layers=True, remat=remat, **knobs), rngs=nnx.Rngs(1))
  _copy_into_periods(loop, scan, 2)
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 1, 37)
  np.testing.assert_allclose(_forward(scan, tokens), _forward(loop, tokens), atol=1e-5,
                             rtol=1e-5)
  aux_loop, z_loop, metrics_loop = moe.router_losses(loop)
  aux_scan, z_scan, metrics_scan = moe.router_losses(scan)
  assert sorted(metrics_scan) == sorted(metrics_loop)
  assert 'moe/load/decoder/layer3/expert0' in metrics_loop   # layers 1 and 3 are MoE
  assert 'moe/load/decoder/layer2/expert0' not in metrics_loop
  for key, (value, _) in metrics_loop.items():
    np.testing.assert_allclose(metrics_scan[key][0], value, rtol=1e-5, atol=1e-6, err_msg=key)
  if remat != 'none':   # cached decoding through the scanned periods, under remat
    _check_decoder_generation(scan, tokens[:, :4], n=4, prefix_lm=False)


# ------------------------------------------------------------------- training, accounting


def test_the_trainer_adds_the_weighted_router_losses_and_reports_the_router():
  from tests.training.test_trainer import _batch   # pylint: disable=import-outside-toplevel
  from tests.e2e.sharding_helper import FakeTokenizer, TINY   # pylint: disable=import-outside-toplevel
  from transformer import objectives   # pylint: disable=import-outside-toplevel
  from transformer.training import sharding   # pylint: disable=import-outside-toplevel
  from transformer.training.trainer import Trainer   # pylint: disable=import-outside-toplevel
  config = config_lib.load('configs/gpt2.py:tiny', {
      **TINY, 'train.batch_size': '2', 'mesh.shape': '(1, 1, 1)', 'model.moe_experts': '4',
      'model.moe_top_k': '2', 'model.moe_aux_loss': '0.5', 'model.moe_z_loss': '0.25'})
  objective = objectives.get(config, FakeTokenizer())
  trainer = Trainer.create(config, objective, sharding.make_mesh(config.mesh, jax.devices()[:1]),
                           total_steps=10)
  state, batch = trainer.init_state(), _batch(rows=1)
  summed, metrics = jax.jit(trainer._loss)(state['params'], batch, state['step'])
  xent, count = metrics['loss']
  aux, z = metrics['moe/aux_loss'][0], metrics['moe/z_loss'][0]
  np.testing.assert_allclose(summed, xent + (0.5 * aux + 0.25 * z) * count, rtol=1e-5)
  assert aux > 0 and z > 0
  loads = [metrics[f'moe/load/decoder/layer0/expert{i}'][0] for i in range(4)]
  np.testing.assert_allclose(sum(loads), 1.0, rtol=1e-5)
  assert {'moe/dropped', 'moe/max_load', 'moe/min_load'} <= set(metrics)   # train/moe/* in TB


def test_accounting_counts_total_and_active_parameters_and_active_flops():
  overrides = {'data.seq_len': '32'}
  dense = config_lib.load('configs/gpt2.py:tiny', overrides)
  sparse = config_lib.load('configs/gpt2.py:tiny', {
      **overrides, 'model.moe_experts': '8', 'model.moe_top_k': '2', 'model.moe_every': '2'})
  hp = accounting.hparams(sparse)
  d, f, e, layers_ = hp.d_model, hp.d_ff, 8, hp.num_layers
  counts = accounting.count_params(accounting.abstract_model(sparse))
  experts = counts['decoder/experts']
  assert experts == e * (2 * d * f + f + d)   # wi, wo and their biases
  assert counts['decoder/router'] == d * e
  assert counts['active'] == counts['total'] - experts * (e - 2) // e
  assert 'active' not in accounting.count_params(accounting.abstract_model(dense))
  assert f'{counts["active"]:,} active' in console.model_line(sparse, counts, 1.0)   # the log
  mlp = accounting.flops_per_token(dense)['mlp']
  per_layer = mlp / layers_   # 1 of the 2 layers is MoE: 2 experts + the router
  assert accounting.flops_per_token(sparse)['mlp'] == pytest.approx(
      per_layer + 2 * per_layer + 2 * d * e)


# ------------------------------------------------------------------- refusals


BAD = [
    (dict(moe_experts=2, moe_top_k=3), 'moe_top_k=3', 'model.moe_experts=2'),
    (dict(moe_experts=-1), 'moe_experts=-1', 'must be >= 0'),
    (dict(moe_experts=4, moe_every=0), 'moe_every=0', '>= 1'),
    (dict(moe_experts=4, moe_capacity_factor=-1.0), 'moe_capacity_factor=-1.0', 'dropless'),
    (dict(moe_experts=4, moe_aux_loss=float('inf')), 'moe_aux_loss=inf', '>= 0'),
    (dict(moe_experts=4, moe_every=3), 'moe_every=3', 'model.num_layers=2'),
    (dict(moe_experts=4, moe_every=2, num_layers=3, scan_layers=True), 'moe_every=2',
     'model.scan_layers=True'),
    (dict(moe_experts=4, family='encoder_decoder', share_encoder_decoder=True),
     'share_encoder_decoder=True', 'model.moe_experts=0'),
]


@pytest.mark.parametrize('overrides,needle,other', BAD, ids=[n for _, n, _ in BAD])
def test_bad_values_are_one_line_naming_the_keys(overrides, needle, other):
  with pytest.raises(ConfigError) as e:
    models.HParams.from_config(_config(**overrides))
  message = str(e.value)
  assert message.startswith(f'`model.{needle}`') and other in message, message
  assert '\n' not in message


def test_the_train_cli_refuses_top_k_over_the_experts_writing_nothing(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train.main(['--config', 'configs/gpt2.py:tiny', f'--workdir={tmp_path}',
                '--config.model.moe_experts=2', '--config.model.moe_top_k=4'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith('error: `model.moe_top_k=4`:'), err
  assert 'model.moe_experts=2' in err and '\n' not in err and not os.listdir(tmp_path)


def test_export_hf_refuses_a_mixture_of_experts():
  model = config_lib.load_file('configs/gpt2.py:tiny').model
  model.update(vocab_size=64, moe_experts=4)
  with pytest.raises(ConfigError) as e:
    architectures.architecture(models.HParams.from_config(model), 'lm')
  message = str(e.value)
  assert message.startswith('`model.moe_experts=4`: Hugging Face GPT2') and '\n' not in message
