"""The losses every objective shares: weighted float32 cross-entropy, accuracy, and the
next-token / shifted-decoder-input layouts of packed segments."""

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels, weights, *, z_loss=0.0):
  """Weighted cross-entropy in float32, whatever the dtype of `logits`.

  Args:
    logits: [..., V] unnormalised scores.
    labels: [...] int ids of the correct class.
    weights: [...] 0/1 (or real) weight of each position; padding has weight 0.
    z_loss: coefficient of the auxiliary log(Z)**2 term (PaLM) that keeps the softmax
      normaliser near 1; 0 disables it.

  Returns:
    (loss, metrics): loss = (sum of weighted cross-entropy + z-loss) / max(sum of weights, 1);
    metrics: 'loss' and 'accuracy' as (sum, count), plus 'z_loss' when enabled. Positions of
    weight 0 are selected away, not multiplied by 0: a NaN/Inf logit there (padding) changes
    neither the loss, the metrics nor the gradient. The [..., V] work is three passes over the
    logits (max, normaliser + accuracy, and one fused pass for the whole gradient: see
    `token_xent`); no [..., V] array but the logits' gradient is ever written.
  """
  weights = weights.astype(jnp.float32)
  keep = weights != 0
  labels = labels.astype(jnp.int32)
  xent, log_z, correct = token_xent(logits.astype(jnp.float32), labels, keep)
  count = jnp.sum(weights)
  xent_sum = jnp.sum(xent * weights)
  total = xent_sum
  metrics = {
      'loss': (xent_sum, count),
      'accuracy': (jnp.sum(jnp.where(correct & keep, weights, 0.0)), count),
  }
  if z_loss:
    z_sum = jnp.sum(z_loss * jnp.square(log_z) * weights)
    total = total + z_sum
    metrics['z_loss'] = (z_sum, count)
  return total / jnp.maximum(count, 1.0), metrics


def _masked(logits, keep):
  return jnp.where(keep[..., None], logits, 0.0)


def _is_first_max(logits, label_logit, labels):
  """argmax(logits) == labels, without a variadic argmax reduce (slow on XLA:CPU): no logit is
  larger than the label's, and none before the label equals it (argmax takes the first max).
  A boolean any, not a count: XLA:CPU wrote the count's int32 [..., V] array out and summed it
  in a second pass (GPT-2's cross-entropy forward 69 -> 54 ms at 4096 x 8192 on one core)."""
  before = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) < labels[..., None]
  beaten = jnp.where(before, logits >= label_logit[..., None], logits > label_logit[..., None])
  return ~jnp.any(beaten, axis=-1) & ~jnp.isnan(label_logit)


CHUNK_ELEMENTS = 1 << 22   # logits per chunk of the forward pass (16 MiB of float32)


def _position_terms(logits, labels, keep):
  masked = _masked(logits, keep)
  log_z = jax.nn.logsumexp(masked, axis=-1)
  label_logit = jnp.take_along_axis(masked, labels[..., None], axis=-1)[..., 0]
  return log_z - label_logit, log_z, _is_first_max(masked, label_logit, labels)


def _chunk_rows(rows, vocab):
  """Rows per chunk: the largest power of two dividing `rows` within CHUNK_ELEMENTS logits;
  `rows` (one chunk) when that would take more than 256 chunks."""
  chunk = 1
  while chunk * 2 * vocab <= CHUNK_ELEMENTS and rows % (chunk * 2) == 0:
    chunk *= 2
  return chunk if rows // chunk <= 256 else rows


@jax.custom_vjp
def token_xent(logits, labels, keep):
  """Per position: (cross-entropy, log Z, argmax == label) of float32 logits, 0 where not `keep`.

  The forward pass runs over chunks of positions (`jax.lax.map`), so its temporaries (XLA:CPU
  writes the exponentials and the accuracy comparisons out before reducing them) are one chunk,
  not another [..., V] array. The VJP writes d/dlogits = (g_xent + g_logz) * softmax -
  g_xent * onehot(label) in one fused pass over the logits (autodiff's version scatters into a
  zero [..., V] array and makes separate passes for the mask, the softmax and the one-hot);
  `correct` has no gradient.
  """
  shape, vocab = labels.shape, logits.shape[-1]
  rows = max(1, labels.size)
  chunk = _chunk_rows(rows, vocab)
  if chunk == rows:
    return _position_terms(logits, labels, keep)
  split = lambda x, *tail: x.reshape((rows // chunk, chunk) + tail)
  out = jax.lax.map(lambda a: _position_terms(*a),
                    (split(logits, vocab), split(labels), split(keep)))
  return tuple(o.reshape(shape) for o in out)


def _token_xent_fwd(logits, labels, keep):
  out = token_xent(logits, labels, keep)
  return out, (logits, labels, keep, out[1])


def _token_xent_bwd(residuals, cotangents):
  logits, labels, keep, log_z = residuals
  g_xent, g_logz, _ = cotangents
  probs = jnp.exp(_masked(logits, keep) - log_z[..., None])
  grad = jnp.where(keep[..., None], (g_xent + g_logz)[..., None] * probs, 0.0)
  # The label's -g_xent as a scatter onto one entry per position after the dense pass: a one-hot
  # comparison inside the pass made it 1.5x slower on XLA:CPU (103 -> 70 ms at 4096 x 8192).
  rows = grad.reshape(-1, grad.shape[-1])
  minus = jnp.where(keep, -g_xent, 0.0).reshape(-1)
  rows = rows.at[jnp.arange(rows.shape[0]), labels.reshape(-1)].add(minus, mode='drop')
  return rows.reshape(grad.shape), None, None


token_xent.defvjp(_token_xent_fwd, _token_xent_bwd)


def accuracy(logits, labels, weights):
  """(number of weighted positions whose argmax equals the label, sum of weights)."""
  weights = weights.astype(jnp.float32)
  correct = jnp.argmax(logits, axis=-1) == labels
  return jnp.sum(jnp.where(correct & (weights != 0), weights, 0.0)), jnp.sum(weights)


def next_token_weights(segment_ids):
  """Weights for 'position i predicts token i+1' inside one array of packed segments.

  Returns [B, L] float32: 1 at i when i+1 is in the same non-padding segment, else 0 (the last
  token of every segment, padding, and the last column predict nothing).
  """
  same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)
  return jnp.pad(same, ((0, 0), (0, 1))).astype(jnp.float32)


def next_token_labels(tokens):
  """[B, L] labels for next-token prediction: tokens shifted left by one, 0 in the last column."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def shift_right_in_segments(tokens, segment_ids, start_id=0):
  """Decoder inputs for teacher forcing: each token moves one step right inside its segment.

  The first token of every segment becomes `start_id` (model.decoder_start_id: 0 for T5, 2 for
  Hugging Face BART), so packed examples never see each other:
  out[i] = tokens[i-1] if segment_ids[i-1] == segment_ids[i] else start_id (0 on padding).
  """
  shifted = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  prev_seg = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
  starts = jnp.where(segment_ids > 0, start_id, 0)
  return jnp.where(prev_seg == segment_ids, shifted, starts).astype(tokens.dtype)
