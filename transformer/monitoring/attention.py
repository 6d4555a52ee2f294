"""Attention pictures for TensorBoard: the weights of one example (`first_layer`) and their image
(`render`)."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer.models.attention import MultiHeadAttention


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


def render(weights, labels_q=None, labels_k=None, title=None) -> np.ndarray:
  """All heads of one attention map side by side, as a uint8 HxWx3 picture (matplotlib Agg)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  w_HQK = np.asarray(weights, np.float32)
  if w_HQK.ndim == 2:
    w_HQK = w_HQK[None]
  if w_HQK.ndim != 3:
    raise ValueError(f'attention weights must be [heads, Lq, Lk], got shape {w_HQK.shape}')
  heads, lq, lk = w_HQK.shape
  panel = min(4.0, max(1.6, 0.12 * max(lq, lk)))   # inches per head, grows with length
  fig = Figure(figsize=(panel * heads + 0.4, panel + 0.6), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, heads, squeeze=False)[0]
  show_labels = max(lq, lk) <= 48
  for h, ax in enumerate(axes):
    ax.imshow(w_HQK[h], cmap='viridis', vmin=0.0, vmax=max(float(w_HQK[h].max()), 1e-6),
              interpolation='nearest', aspect='auto')
    ax.set_title(f'head {h}', fontsize=8)
    if show_labels and labels_k is not None:
      ax.set_xticks(range(lk), [str(t) for t in labels_k][:lk], rotation=90, fontsize=6)
    else:
      ax.set_xticks([])
    if show_labels and labels_q is not None and h == 0:
      ax.set_yticks(range(lq), [str(t) for t in labels_q][:lq], fontsize=6)
    else:
      ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.canvas.draw()
  rgba = np.asarray(fig.canvas.buffer_rgba())
  return np.array(rgba[:, :, :3])
