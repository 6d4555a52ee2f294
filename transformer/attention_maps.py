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
  attn = [m for _, m in model.iter_modules() if isinstance(m, MultiHeadAttention)]
  for m in attn:
    m.capture_weights = True
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  nnx.jit(lambda m, b: objective.loss_and_metrics(m, b, deterministic=True))(model, batch)
  captured = nnx.pop(model, nnx.Intermediate)
  for m in attn:
    m.capture_weights = False
  found = [(path, v) for path, v in nnx.to_flat_state(captured)
           if 'self_attention' in path and path[-1] == 'attention_weights' or (
               'self_attention' in path and 'attention_weights' in path)]
  if not found:
    return None
  found.sort(key=lambda pv: [str(p) for p in pv[0]])
  weights = np.asarray(jnp.asarray(found[0][1].get_value()[0] if isinstance(
      found[0][1].get_value(), tuple) else found[0][1].get_value()))
  if weights.ndim == 5:  # scanned layers: [layers, B, N, T, S]
    weights = weights[0]
  weights = weights[0]  # first example: [N, T, S]
  stream = 'inputs' if 'inputs' in batch and 'targets' not in batch else 'targets'
  seg = np.asarray(batch.get(f'{stream}_segment_ids', batch.get('inputs_segment_ids')))[0]
  n = int(np.sum(seg == 1)) or weights.shape[-1]
  return weights[:, :n, :n]
