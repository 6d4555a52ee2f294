"""Attention weights of one example, for the TensorBoard pictures written at eval time."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.attention import MultiHeadAttention


def first_layer(model, objective, batch):
  """Weights [heads, T, T] of the first self-attention layer for the batch's first example.

  Runs the objective's own forward pass with weight capture switched on (on this model
  instance only), so every family and objective is drawn the same way.
  """
  attn = [m for _, m in nnx.iter_modules(model) if isinstance(m, MultiHeadAttention)]
  for m in attn:
    m.capture_weights = True
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  nnx.jit(lambda m, b: objective.loss_and_metrics(m, b, deterministic=True))(model, batch)
  captured = nnx.pop(model, nnx.Intermediate)
  for m in attn:
    m.capture_weights = False
  found = sorted((tuple(map(str, path)), var.get_value())
                 for path, var in nnx.to_flat_state(captured)
                 if 'self_attention' in map(str, path))
  if not found:
    return None
  value = found[0][1]
  weights = np.asarray(value[0] if isinstance(value, tuple) else value)  # sow keeps a tuple
  if weights.ndim == 5:  # scanned layers: [layers, B, N, T, S]
    weights = weights[0]
  weights = weights[0]  # first example: [N, T, S]
  stream = 'targets' if 'targets_segment_ids' in batch else 'inputs'
  n = int(np.sum(np.asarray(batch[f'{stream}_segment_ids'])[0] == 1)) or weights.shape[-1]
  return weights[:, :n, :n]
