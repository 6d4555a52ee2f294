"""Attention heads as pictures for TensorBoard (matplotlib's Agg canvas: no display needed).

  render_heads(weights_NQK, labels_q, labels_k, titles=..., subtitles=...) -> [uint8 [H, W, 3]]
  render(weights_QK, labels_q, labels_k, title=..., subtitle=...) -> uint8 [H, W, 3]

Queries run down, keys across, weight 0 to the head's largest in viridis with a colour bar. The
map gets at least MIN_PX pixels a side (more for long examples, up to MAX_PX); with token strings
(examples of up to attention.MAX_LABELLED tokens) every token gets LABEL_PX pixels and its text on
both axes, otherwise the axes count positions.
"""

import functools

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


def render_heads(weights_NQK, labels_q=None, labels_k=None, *, titles=(), subtitles=(),
                 vmax=None):
  """One picture per head of one layer's weights [heads, Lq, Lk] (labels: one string per query /
  key). The axes and token strings are drawn once per shape and labels (and reused by the next
  layers of the same example); each head redraws only its map, colour bar and titles.

  Colours run from 0 to the head's `vmax[h]` (default: its largest weight; larger ones are
  clipped, e.g. the weight 1 of a causal map's first query, which would otherwise darken
  everything else). A subtitle may hold two lines.
  """
  w_NQK = np.asarray(weights_NQK, np.float32)
  if w_NQK.ndim != 3:
    raise ValueError(f'attention weights must be [heads, Lq, Lk], got shape {w_NQK.shape}')
  heads, q, k = w_NQK.shape
  tops = [max(float(w_NQK[h].max() if vmax is None or vmax[h] is None else vmax[h]), 1e-6)
          for h in range(heads)]
  labels = (None, None) if labels_q is None or labels_k is None else (
      tuple(token_label(t) for t in labels_q)[:q], tuple(token_label(t) for t in labels_k)[:k])
  clipped = any(w_NQK[h].max() > tops[h] for h in range(heads))
  fig, image, changing, background = _canvas(q, k, *labels, clipped)
  title, subtitle = changing[-2:]
  pictures = []
  for h in range(heads):
    image.set_data(w_NQK[h])
    image.set_clim(0.0, tops[h])
    title.set_text(titles[h] if h < len(titles) else '')
    subtitle.set_text(subtitles[h] if h < len(subtitles) else '')
    fig.canvas.restore_region(background)
    for artist in changing:
      fig.draw_artist(artist)
    pictures.append(np.array(np.asarray(fig.canvas.buffer_rgba())[:, :, :3]))
  return pictures


@functools.lru_cache(maxsize=8)
def _canvas(q, k, labels_q, labels_k, clipped):
  """(figure, its image, the artists each head redraws, the drawn rest) for one layout."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig_w, fig_h, (left, bottom, width, height) = _layout(q, k, labels_q is not None)
  fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
  FigureCanvasAgg(fig)
  ax = fig.add_axes([left / fig_w, bottom / fig_h, width / fig_w, height / fig_h])
  image = ax.imshow(np.zeros((q, k), np.float32), cmap='viridis', vmin=0.0, vmax=1.0,
                    interpolation='nearest', aspect='auto')
  _ticks(ax, q, k, labels_q, labels_k)
  cax = fig.add_axes([(left + width + 10) / fig_w, bottom / fig_h, 12 / fig_w, height / fig_h])
  fig.colorbar(image, cax=cax, extend='max' if clipped else 'neither').ax.tick_params(
      labelsize=7)
  title = fig.text(left / fig_w, 1 - 8 / fig_h, '', fontsize=9, weight='bold', va='top',
                   parse_math=False)
  subtitle = fig.text(left / fig_w, 1 - 23 / fig_h, '', fontsize=7.5, va='top', linespacing=1.3,
                      parse_math=False)
  changing = (image, cax, title, subtitle)
  for artist in changing:
    artist.set_visible(False)
  fig.canvas.draw()
  background = fig.canvas.copy_from_bbox(fig.bbox)
  for artist in changing:
    artist.set_visible(True)
  return fig, image, changing, background


def _ticks(ax, q, k, labels_q, labels_k):
  """Token strings on both axes, or positions every 8 x n tokens."""
  if labels_q is not None and labels_k is not None:
    ax.set_xticks(range(k), labels_k, rotation=90, fontsize=7, parse_math=False)
    ax.set_yticks(range(q), labels_q, fontsize=7, parse_math=False)
  else:
    step = max(8, 8 * round(max(q, k) / 64))
    ax.set_xticks(range(0, k, step))
    ax.set_yticks(range(0, q, step))
    ax.tick_params(labelsize=7)
  ax.set_xlabel('key', fontsize=8)
  ax.set_ylabel('query', fontsize=8)


def render(weights_QK, labels_q=None, labels_k=None, *, title='', subtitle='', vmax=None):
  """The picture of one head's weights [Lq, Lk] (see `render_heads`)."""
  w_QK = np.asarray(weights_QK, np.float32)
  if w_QK.ndim != 2:
    raise ValueError(f'attention weights of one head must be [Lq, Lk], got shape {w_QK.shape}')
  return render_heads(w_QK[None], labels_q, labels_k, titles=[title], subtitles=[subtitle],
                      vmax=[vmax])[0]
