"""The losses every objective shares: weighted float32 cross-entropy, accuracy, bits per byte,
and the next-token / shifted-decoder-input layouts of packed segments."""

import math

import jax.numpy as jnp

from transformer.models import kernels as kernel_lib


def cross_entropy(logits, labels, weights, *, z_loss=0.0, kernels='tuned', label_bytes=None):
  """Weighted cross-entropy in float32, whatever the dtype of `logits`.

  Args:
    logits: [..., V] unnormalised scores.
    labels: [...] int ids of the correct class.
    weights: [...] 0/1 (or real) weight of each position; padding has weight 0.
    z_loss: coefficient of the auxiliary log(Z)**2 term (PaLM) that keeps the softmax
      normaliser near 1; 0 disables it.
    kernels: model.kernels, the set (models/kernels.py) whose `token_xent` computes the terms.
    label_bytes: [...] UTF-8 bytes of text each label stands for (`label_bytes`), or None.

  Returns:
    (loss, metrics): loss = (sum of weighted cross-entropy + z-loss) / max(sum of weights, 1);
    metrics: 'loss' and 'accuracy' as (sum, count), plus 'z_loss' when enabled and
    'bits_per_byte' (cross-entropy in bits, bytes of the scored text) with `label_bytes`. Positions of
    weight 0 are selected away, not multiplied by 0: a NaN/Inf logit there (padding) changes
    neither the loss, the metrics nor the gradient. With the tuned kernels the [..., V] work is
    three passes over the logits (max, normaliser + accuracy, and one fused pass for the whole
    gradient: see `kernels.token_xent`); no [..., V] array but the logits' gradient is written.
  """
  weights = weights.astype(jnp.float32)
  keep = weights != 0
  labels = labels.astype(jnp.int32)
  token_xent = kernel_lib.select(kernels).token_xent
  xent, log_z, correct = token_xent(logits.astype(jnp.float32), labels, keep)
  count = jnp.sum(weights)
  xent_sum = jnp.sum(xent * weights)
  total = xent_sum
  metrics = {
      'loss': (xent_sum, count),
      'accuracy': (jnp.sum(jnp.where(correct & keep, weights, 0.0)), count),
  }
  if label_bytes is not None:
    scored_bytes = jnp.sum(jnp.where(keep, label_bytes * weights, 0.0))
    metrics['bits_per_byte'] = (xent_sum / math.log(2), scored_bytes)
  if z_loss:
    z_sum = jnp.sum(z_loss * jnp.square(log_z) * weights)
    total = total + z_sum
    metrics['z_loss'] = (z_sum, count)
  return total / jnp.maximum(count, 1.0), metrics


def label_bytes(table, labels, previous):
  """[...] float32 UTF-8 bytes of decoded text that each label stands for, or None without a
  table. `table` (Objective.byte_table): (bytes, leading, starts), each [tokenizer vocab]; a
  label's bytes are its token's, less the dummy-prefix space the decoder drops when the label
  begins a text: when `previous` (the token before it: the input at its position) is one after
  which text starts (bos, sep, cls, eos, pad, the decoder's start id). Ids past the table have
  none, so sum(label_bytes) over a text's labels is len(decoded text in UTF-8)."""
  if table is None:
    return None
  lengths, leading, starts = (jnp.asarray(t, jnp.float32) for t in table)
  take = lambda t, ids: jnp.take(t, ids.astype(jnp.int32), mode='fill', fill_value=0.0)
  return take(lengths, labels) - take(leading, labels) * take(starts, previous)


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
