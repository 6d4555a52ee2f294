"""models/kernels.py: each tuned kernel gives its plain twin's forward and autodiff gradients, and
`model.kernels` switches every one of them in every family (loss and gradients equal, the plain
program free of custom VJPs and optimization barriers)."""

import functools
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from transformer import models, objectives, train
from transformer.errors import ConfigError
from transformer.models import kernels, layers
from transformer.objectives import losses
from transformer.training import setup

TUNED, PLAIN = kernels.select('tuned'), kernels.select('plain')


def test_the_two_sets_and_their_names():
  assert kernels.KERNELS == ('tuned', 'plain')
  assert TUNED.dense_dot is kernels.dense_dot and PLAIN.gelu is kernels.plain_gelu


# ------------------------------------------------------------------- each kernel


@pytest.mark.parametrize('z_loss', [0.0, 1e-2])
def test_token_xent_loss_gradient_and_accuracy_equal_the_plain_autodiff(z_loss):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 6, 11)).astype(np.float32)   # 18 rows: tuned: 9 chunks of 2
  logits[0, 0, [2, 5]] = 9.0             # a tie at the max: argmax takes the first (2)
  logits[0, 1, [1, 4]] = 9.0             # label 4 loses the tie to 1
  labels = rng.integers(0, 11, size=(3, 6)).astype(np.int32)
  labels[0, 0], labels[0, 1] = 2, 4
  weights = rng.choice([0.0, 0.5, 1.0], size=(3, 6)).astype(np.float32)
  weights[0, :2] = 1.0
  assert kernels._chunk_rows(18, 11) == 2
  value_and_grad = lambda kind: jax.value_and_grad(
      lambda x: losses.cross_entropy(x, labels, weights, z_loss=z_loss, kernels=kind),
      has_aux=True)(jnp.asarray(logits))
  (loss, metrics), grad = value_and_grad('tuned')
  (ref_loss, ref_metrics), ref_grad = value_and_grad('plain')
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
  assert float(metrics['accuracy'][0]) == float(ref_metrics['accuracy'][0])
  for kind in kernels.KERNELS:
    tie_won = losses.cross_entropy(jnp.asarray(logits[:1, :1]), labels[:1, :1], weights[:1, :1],
                                   kernels=kind)
    tie_lost = losses.cross_entropy(jnp.asarray(logits[:1, 1:2]), labels[:1, 1:2],
                                    weights[:1, :1], kernels=kind)
    assert float(tie_won[1]['accuracy'][0]) == 1.0 and float(tie_lost[1]['accuracy'][0]) == 0.0


def test_the_plain_cross_entropy_is_the_logsumexp_formulation():
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 7, size=(2, 5)), jnp.int32)
  want = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
  loss, _ = losses.cross_entropy(logits, labels, jnp.ones((2, 5)), kernels='plain')
  np.testing.assert_allclose(loss, jnp.mean(want), rtol=1e-6)


def test_tied_logits_gradients_equal_the_plain_autodiff():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(13, 8)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 13)), jnp.float32)
  plain = lambda x, t: jnp.sum(PLAIN.tied_logits(x, t) * g)
  tied = lambda x, t: jnp.sum(TUNED.tied_logits(x, t) * g)
  np.testing.assert_allclose(PLAIN.tied_logits(x, table), jnp.einsum('bld,vd->blv', x, table),
                             rtol=1e-6)
  np.testing.assert_allclose(tied(x, table), plain(x, table), rtol=1e-6)
  for got, want in zip(jax.grad(tied, (0, 1))(x, table), jax.grad(plain, (0, 1))(x, table)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_biased_tied_logits_equal_the_plain_product_plus_bias():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(13, 8)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(13,)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 13)), jnp.float32)
  plain = lambda x, t, b: jnp.sum(PLAIN.biased_tied_logits(x, t, b) * g)
  ours = lambda x, t, b: jnp.sum(TUNED.biased_tied_logits(x, t, b) * g)
  np.testing.assert_allclose(ours(x, table, bias), plain(x, table, bias), rtol=1e-6)
  got = jax.jit(jax.grad(ours, (0, 1, 2)))(x, table, bias)
  want = jax.jit(jax.grad(plain, (0, 1, 2)))(x, table, bias)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('x_shape,kernel_shape,n_in', [
    ((2, 5, 8), (8, 16), 1),          # in < out (an MLP's input projection)
    ((2, 5, 16), (16, 8), 1),         # in > out: the transposed product
    ((2, 5, 8), (8, 2, 4), 1),        # a query projection [embed, heads, kv]
    ((2, 5, 2, 4), (2, 4, 8), 2),     # an output projection [heads, kv, embed]
    ((3, 2, 5, 6), (6, 6), 1),        # more leading dims, square
])
def test_dense_dot_gradients_equal_the_plain_autodiff(x_shape, kernel_shape, n_in):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
  out_shape = x_shape[:len(x_shape) - n_in] + kernel_shape[n_in:]
  g = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
  plain = lambda x, k: jnp.sum(PLAIN.dense_dot(x, k, n_in) * g)
  ours = lambda x, k: jnp.sum(TUNED.dense_dot(x, k, n_in) * g)
  np.testing.assert_array_equal(TUNED.dense_dot(x, kernel, n_in),
                                PLAIN.dense_dot(x, kernel, n_in))
  got = jax.jit(jax.grad(ours, (0, 1)))(x, kernel)
  want = jax.jit(jax.grad(plain, (0, 1)))(x, kernel)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype, tol', [(jnp.float32, 2e-6), (jnp.bfloat16, 2e-2)])
def test_gelu_equals_jax_nn_gelu_and_its_gradient_autodiffs(dtype, tol):
  x = jnp.concatenate([jnp.linspace(-9.0, 9.0, 301), jnp.asarray([-40.0, 0.0, 40.0])]).astype(dtype)
  g = jnp.asarray(np.random.default_rng(3).normal(size=x.shape), dtype)
  np.testing.assert_array_equal(TUNED.gelu(x), PLAIN.gelu(x))
  np.testing.assert_array_equal(PLAIN.gelu(x), jax.nn.gelu(x, approximate=False))
  got = jax.jit(jax.grad(lambda x: jnp.sum(TUNED.gelu(x) * g)))(x)
  want = jax.jit(jax.grad(lambda x: jnp.sum(PLAIN.gelu(x) * g)))(x)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=tol, atol=tol)
  assert layers.activation_function('gelu') is kernels.gelu
  assert layers.activation_function('gelu', 'plain') is kernels.plain_gelu


# ------------------------------------------------------------------- the switch, per family

V, B, L = 40, 2, 16
MODELS = {
    'decoder': dict(family='decoder'),   # tied logits
    'encoder': dict(family='encoder', lm_head_bias=True, mlm_transform=True, embed_norm=True,
                    norm_position='post', final_norm=False),   # BERT: biased tied logits
    'encoder_decoder': dict(family='encoder_decoder', tie_embeddings=False),   # a Dense LM head
}
OBJECTIVES = {'decoder': 'causal_lm', 'encoder': 'mlm', 'encoder_decoder': 'seq2seq'}
TOKENIZER = types.SimpleNamespace(vocab_size=V, pad_id=0, eos_id=1, unk_id=2, bos_id=3, mask_id=4,
                                  sep_id=5, cls_id=6, sentinel_ids=[])


def _config(family, kind):
  c = common.base_config()
  c.model = common.model_config(vocab_size=V, num_layers=1, d_model=32, num_heads=4, d_ff=64,
                                max_len=L, activation='gelu', kernels=kind, **MODELS[family])
  c.objective = OBJECTIVES[family]
  c.data.seq_len = L
  return c


def _stream(rng, name, lengths=((7, 6), (12,))):
  """A packed stream: row r holds segments of `lengths[r]` tokens, then padding."""
  segs, positions = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
  for r, row in enumerate(lengths):
    start = 0
    for s, n in enumerate(row, 1):
      segs[r, start:start + n], positions[r, start:start + n] = s, np.arange(n)
      start += n
  tokens = np.where(segs > 0, rng.integers(7, V, size=(B, L)), 0).astype(np.int32)
  return {name: tokens, f'{name}_segment_ids': segs, f'{name}_positions': positions}


def _batch(family):
  rng = np.random.default_rng(5)
  if family == 'decoder':
    return _stream(rng, 'targets')
  batch = _stream(rng, 'inputs')
  if family == 'encoder':
    chosen = (batch['inputs_segment_ids'] > 0) & (rng.random((B, L)) < 0.2)
    batch['inputs_labels'] = np.where(chosen, batch['inputs'], 0).astype(np.int32)
    return batch
  return {**batch, **_stream(rng, 'targets', ((5, 4), (8,)))}


@functools.cache
def _run(family, kind):
  """(jaxpr of the loss, StableHLO of its gradient, loss, gradients) of the tiny model built from
  config `kind`, through the config's objective. The StableHLO is the program XLA is given:
  XLA:CPU's compiled HLO no longer shows barriers (it expands them after scheduling)."""
  config = _config(family, kind)
  objective = objectives.get(config, TOKENIZER)
  batch = _batch(family)
  model = models.build(config.model, head=objective.head, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = lambda p: objective.loss_and_metrics(nnx.merge(graphdef, p, rest), batch,
                                                 deterministic=True)[0]
  lowered = jax.jit(jax.value_and_grad(loss_fn)).lower(params)
  loss, grads = lowered.compile()(params)
  return str(jax.make_jaxpr(loss_fn)(params)), lowered.as_text(), loss, grads


@pytest.mark.parametrize('family', list(MODELS))
def test_plain_kernels_give_the_tuned_loss_and_gradients(family):
  """float32, 1 layer: the loss within rtol 1e-6, every gradient within atol 1e-6 + rtol 1e-5 (the
  sets differ only in the order of the products' sums)."""
  *_, loss, grads = _run(family, 'tuned')
  *_, ref_loss, ref_grads = _run(family, 'plain')
  assert np.isfinite(loss) and loss > 0
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               grads, ref_grads)


@pytest.mark.parametrize('family', list(MODELS))
def test_the_switch_is_real_custom_vjps_and_barriers_only_when_tuned(family):
  jaxpr, hlo, *_ = _run(family, 'tuned')
  assert 'custom_vjp_call' in jaxpr and 'optimization_barrier' in hlo
  jaxpr, hlo, *_ = _run(family, 'plain')
  assert 'custom_vjp_call' not in jaxpr and 'optimization_barrier' not in hlo


def test_a_checkpoint_resumes_and_initialises_under_either_setting():
  """model.kernels changes no parameter: a runtime key, outside the resume fingerprint."""
  state = {'params': {'w': np.zeros((2, 3), np.float32)}}
  assert 'kernels' in setup.RUNTIME_MODEL_KEYS
  assert (setup.fingerprint(_config('decoder', 'tuned'), state) ==
          setup.fingerprint(_config('decoder', 'plain'), state))


# ------------------------------------------------------------------- a bad value


def test_an_unknown_value_is_one_line_naming_the_key_and_the_choices():
  with pytest.raises(ConfigError) as e:
    models.build(common.model_config(vocab_size=V, kernels='fast'), rngs=nnx.Rngs(0))
  message = str(e.value)
  assert message.startswith("`model.kernels='fast'`") and 'tuned, plain' in message, message
  assert '\n' not in message


def test_the_train_cli_refuses_an_unknown_value_and_writes_nothing(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train.main(['--config', 'configs/gpt2.py:tiny', f'--workdir={tmp_path}',
                '--config.model.kernels=fast'])
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith("error: `model.kernels='fast'`"), err
  assert 'tuned, plain' in err and '\n' not in err
  assert not os.listdir(tmp_path)
