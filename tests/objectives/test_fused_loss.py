"""The fused cross-entropy VJP, the tied-logits, dense-layer and GELU VJPs give autodiff's numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models import layers
from transformer.objectives import losses


def _reference(logits, labels, weights, z_loss):
  """The plain autodiff formulation (the code before the fused VJP)."""
  logits = jnp.where((weights != 0)[..., None], logits.astype(jnp.float32), 0.0)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  total = jnp.sum((log_z - label_logit) * weights) + jnp.sum(z_loss * log_z ** 2 * weights)
  correct = jnp.sum(jnp.where((jnp.argmax(logits, -1) == labels) & (weights != 0), weights, 0.))
  return total / jnp.maximum(jnp.sum(weights), 1.0), correct


@pytest.mark.parametrize('z_loss', [0.0, 1e-2])
def test_loss_gradient_and_accuracy_equal_autodiff(z_loss):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 6, 11)).astype(np.float32)
  logits[0, 0, [2, 5]] = 9.0             # a tie at the max: argmax takes the first (2)
  logits[0, 1, [1, 4]] = 9.0             # label 4 loses the tie to 1
  labels = rng.integers(0, 11, size=(3, 6)).astype(np.int32)
  labels[0, 0], labels[0, 1] = 2, 4
  weights = rng.choice([0.0, 0.5, 1.0], size=(3, 6)).astype(np.float32)
  weights[0, :2] = 1.0
  fused = lambda x: losses.cross_entropy(x, labels, weights, z_loss=z_loss)
  reference = lambda x: _reference(x, labels, weights, z_loss)
  (loss, metrics), grad = jax.value_and_grad(fused, has_aux=True)(jnp.asarray(logits))
  (ref_loss, ref_correct), ref_grad = jax.value_and_grad(reference, has_aux=True)(
      jnp.asarray(logits))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
  assert float(metrics['accuracy'][0]) == float(ref_correct)
  tie_won = losses.cross_entropy(jnp.asarray(logits[:1, :1]), labels[:1, :1], weights[:1, :1])
  tie_lost = losses.cross_entropy(jnp.asarray(logits[:1, 1:2]), labels[:1, 1:2], weights[:1, :1])
  assert float(tie_won[1]['accuracy'][0]) == 1.0 and float(tie_lost[1]['accuracy'][0]) == 0.0


def test_tied_logits_gradients_equal_the_einsum():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(13, 8)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 13)), jnp.float32)
  plain = lambda x, t: jnp.sum(jnp.einsum('bld,vd->blv', x, t) * g)
  tied = lambda x, t: jnp.sum(layers.tied_logits(x, t) * g)
  np.testing.assert_allclose(tied(x, table), plain(x, table), rtol=1e-6)
  for got, want in zip(jax.grad(tied, (0, 1))(x, table), jax.grad(plain, (0, 1))(x, table)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_biased_tied_logits_equal_the_einsum_plus_bias():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(13, 8)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(13,)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 13)), jnp.float32)
  plain = lambda x, t, b: jnp.sum((jnp.einsum('bld,vd->blv', x, t) + b) * g)
  ours = lambda x, t, b: jnp.sum(layers.biased_tied_logits(x, t, b) * g)
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
def test_dense_dot_gradients_equal_autodiff(x_shape, kernel_shape, n_in):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
  dims = ((tuple(range(len(x_shape) - n_in, len(x_shape))), tuple(range(n_in))), ((), ()))
  out_shape = x_shape[:len(x_shape) - n_in] + kernel_shape[n_in:]
  g = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
  plain = lambda x, k: jnp.sum(jax.lax.dot_general(x, k, dims) * g)
  ours = lambda x, k: jnp.sum(layers.dense_dot(x, k, n_in) * g)
  np.testing.assert_array_equal(layers.dense_dot(x, kernel, n_in),
                                jax.lax.dot_general(x, kernel, dims))
  got = jax.jit(jax.grad(ours, (0, 1)))(x, kernel)
  want = jax.jit(jax.grad(plain, (0, 1)))(x, kernel)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype, tol', [(jnp.float32, 2e-6), (jnp.bfloat16, 2e-2)])
def test_gelu_equals_jax_nn_gelu_and_its_gradient_autodiffs(dtype, tol):
  x = jnp.concatenate([jnp.linspace(-9.0, 9.0, 301), jnp.asarray([-40.0, 0.0, 40.0])]).astype(dtype)
  g = jnp.asarray(np.random.default_rng(3).normal(size=x.shape), dtype)
  np.testing.assert_array_equal(layers.gelu(x), jax.nn.gelu(x, approximate=False))
  got = jax.jit(jax.grad(lambda x: jnp.sum(layers.gelu(x) * g)))(x)
  want = jax.jit(jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=False) * g)))(x)
  assert got.dtype == want.dtype == dtype
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=tol, atol=tol)
  assert layers.ACTIVATIONS['gelu'] is layers.gelu
