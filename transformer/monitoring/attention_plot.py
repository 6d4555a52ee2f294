"""One attention head as a picture for TensorBoard (matplotlib's Agg canvas: no display needed).

  render(weights_QK, labels_q, labels_k, title=..., subtitle=...) -> uint8 [H, W, 3]

Queries run down, keys across, weight 0 to the head's largest in viridis with a colour bar. The
map gets at least MIN_PX pixels a side (more for long examples, up to MAX_PX); with token strings
(examples of up to attention.MAX_LABELLED tokens) every token gets LABEL_PX pixels and its text on
both axes, otherwise the axes count positions.
"""

import numpy as np

MIN_PX = 256
MAX_PX = 768
LABEL_PX = 11        # pixels per token when its text is drawn (7-point type at 100 dpi)
LABEL_CHARS = 12     # longer token strings are cut
DPI = 100


def token_label(text, limit=LABEL_CHARS):
  """A token string that prints on one line: control characters escaped, long ones cut."""
  text = str(text).encode('unicode_escape').decode('ascii', 'replace') if not str(
      text).isprintable() else str(text)
  return text if len(text) <= limit else text[:limit - 1] + '\u2026'


def _layout(q, k, labelled):
  """(figure width, height, [left, bottom, map width, map height]) in pixels."""
  px = max(LABEL_PX if labelled else 3.0, MIN_PX / max(q, k))
  px = min(px, MAX_PX / max(q, k))
  width, height = max(k * px, MIN_PX), max(q * px, MIN_PX)
  margin = 6 * LABEL_CHARS + 34 if labelled else 52   # tick labels + the axis title
  left, bottom, top, right = margin, margin, 58, 70
  return left + width + right, bottom + height + top, (left, bottom, width, height)


def render(weights_QK, labels_q=None, labels_k=None, *, title='', subtitle='', vmax=None):
  """The picture of one head's weights [Lq, Lk] (labels: one string per query / key).

  Colours run from 0 to `vmax` (default: the largest weight; larger ones are clipped, e.g. the
  weight 1 of a causal map's first query, which would otherwise darken everything else).
  `subtitle` may hold two lines.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  w_QK = np.asarray(weights_QK, np.float32)
  if w_QK.ndim != 2:
    raise ValueError(f'attention weights of one head must be [Lq, Lk], got shape {w_QK.shape}')
  q, k = w_QK.shape
  labelled = labels_q is not None and labels_k is not None
  fig_w, fig_h, (left, bottom, width, height) = _layout(q, k, labelled)
  fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
  FigureCanvasAgg(fig)
  ax = fig.add_axes([left / fig_w, bottom / fig_h, width / fig_w, height / fig_h])
  top = max(float(w_QK.max() if vmax is None else vmax), 1e-6)
  image = ax.imshow(w_QK, cmap='viridis', vmin=0.0, vmax=top, interpolation='nearest',
                    aspect='auto')
  if labelled:
    ax.set_xticks(range(k), [token_label(t) for t in labels_k][:k], rotation=90, fontsize=7,
                  parse_math=False)
    ax.set_yticks(range(q), [token_label(t) for t in labels_q][:q], fontsize=7,
                  parse_math=False)
  else:
    step = max(8, 8 * round(max(q, k) / 64))
    ax.set_xticks(range(0, k, step))
    ax.set_yticks(range(0, q, step))
    ax.tick_params(labelsize=7)
  ax.set_xlabel('key', fontsize=8)
  ax.set_ylabel('query', fontsize=8)
  cax = fig.add_axes([(left + width + 10) / fig_w, bottom / fig_h, 12 / fig_w, height / fig_h])
  fig.colorbar(image, cax=cax, extend='max' if w_QK.max() > top else 'neither').ax.tick_params(
      labelsize=7)
  fig.text(left / fig_w, 1 - 8 / fig_h, title, fontsize=9, weight='bold', va='top',
           parse_math=False)
  fig.text(left / fig_w, 1 - 23 / fig_h, subtitle, fontsize=7.5, va='top', linespacing=1.3,
           parse_math=False)
  fig.canvas.draw()
  return np.array(np.asarray(fig.canvas.buffer_rgba())[:, :, :3])
