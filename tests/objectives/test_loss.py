"""The shared loss pieces: float32 weighted cross-entropy, accuracy, shifts inside segments."""

import jax
import jax.numpy as jnp
import numpy as np

from transformer.objectives import base, losses


def _xent_numpy(logits, labels):
  logits = logits.astype(np.float64)
  log_z = np.log(np.exp(logits).sum(-1))
  return log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


def test_cross_entropy_matches_numpy_and_ignores_zero_weights():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, size=(2, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], np.float32)
  loss, metrics = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  expected = (_xent_numpy(logits, labels) * weights).sum() / weights.sum()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'][0] / metrics['loss'][1], expected, rtol=1e-5)
  assert float(metrics['loss'][1]) == 6.0
  correct = ((logits.argmax(-1) == labels) * weights).sum()
  assert float(metrics['accuracy'][0]) == correct and float(metrics['accuracy'][1]) == 6.0
  # Changing logits where the weight is 0 changes nothing.
  logits2 = logits.copy()
  logits2[0, 3:] += 100.0
  loss2, _ = losses.cross_entropy(jnp.asarray(logits2), jnp.asarray(labels), jnp.asarray(weights))
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)


def test_cross_entropy_is_float32_for_bfloat16_logits_and_safe_when_empty():
  logits = jnp.ones((1, 3, 4), jnp.bfloat16)
  loss, metrics = losses.cross_entropy(logits, jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3)))
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-6)
  loss0, _ = losses.cross_entropy(logits, jnp.zeros((1, 3), jnp.int32), jnp.zeros((1, 3)))
  assert float(loss0) == 0.0


def test_z_loss_adds_log_z_squared():
  logits = jnp.array([[[1.0, 2.0, 3.0]]])
  labels = jnp.array([[2]])
  plain, _ = losses.cross_entropy(logits, labels, jnp.ones((1, 1)))
  with_z, metrics = losses.cross_entropy(logits, labels, jnp.ones((1, 1)), z_loss=1e-2)
  log_z = float(jax.nn.logsumexp(logits))
  np.testing.assert_allclose(with_z - plain, 1e-2 * log_z**2, rtol=1e-5)
  assert 'z_loss' in metrics


def test_next_token_weights_and_labels_respect_segments():
  segs = jnp.array([[1, 1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(losses.next_token_weights(segs), [[1, 1, 0, 1, 0, 0]])
  tokens = jnp.array([[5, 6, 7, 8, 9, 0]])
  np.testing.assert_array_equal(losses.next_token_labels(tokens), [[6, 7, 8, 9, 0, 0]])


def test_shift_right_in_segments_starts_every_segment_with_zero():
  tokens = jnp.array([[11, 12, 13, 21, 22, 0, 0], [31, 32, 33, 34, 35, 36, 37]])
  segs = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(
      losses.shift_right_in_segments(tokens, segs),
      [[0, 11, 12, 0, 21, 0, 0], [0, 31, 32, 33, 34, 35, 36]])


def test_shift_right_in_segments_starts_every_segment_with_the_decoder_start_id():
  """model.decoder_start_id (2 for an imported BART) opens every packed segment; padding stays 0."""
  tokens = jnp.array([[11, 12, 13, 21, 22, 0, 0]])
  segs = jnp.array([[1, 1, 1, 2, 2, 0, 0]])
  np.testing.assert_array_equal(losses.shift_right_in_segments(tokens, segs, 2),
                                [[2, 11, 12, 2, 21, 0, 0]])


def test_first_segments_cuts_packed_rows_and_skips_padding_rows():
  batch = dict(targets=np.array([[5, 6, 7, 8], [9, 9, 0, 0], [0, 0, 0, 0]]),
               targets_segment_ids=np.array([[1, 1, 2, 2], [1, 1, 0, 0], [0, 0, 0, 0]]),
               targets_positions=np.array([[0, 1, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]),
               targets_prefix=np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
  out = base.first_segments(batch, 'targets', 3)
  assert out == [dict(tokens=[5, 6], prefix=[1, 0]), dict(tokens=[9, 9], prefix=[1, 0])]


def test_non_finite_logits_at_weight_zero_positions_leave_loss_and_metrics_finite():
  """A NaN/Inf logit where the weight is 0 (padding) changes nothing: select, not multiply."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=(2, 4))
  weights = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float32)
  clean = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights),
                             z_loss=1e-3)
  bad = logits.copy()
  bad[0, 2, :] = np.nan
  bad[0, 3, 1] = np.inf
  bad[1, 1, 0] = -np.inf
  bad[1, 3, :] = np.inf
  loss_fn = lambda x: losses.cross_entropy(x, jnp.asarray(labels), jnp.asarray(weights),
                                         z_loss=1e-3)
  loss, metrics = loss_fn(jnp.asarray(bad))
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(loss, clean[0], rtol=1e-6)
  for name, (total, count) in metrics.items():
    np.testing.assert_allclose(total, clean[1][name][0], rtol=1e-6, err_msg=name)
    assert float(count) == float(clean[1][name][1]) == 4.0
  grad = jax.grad(lambda x: loss_fn(x)[0])(jnp.asarray(bad))
  assert np.all(np.isfinite(grad))                       # nothing flows from a masked position
  np.testing.assert_array_equal(np.asarray(grad)[weights == 0], 0.0)
