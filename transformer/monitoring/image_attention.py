"""What an image model looks at, as pictures over the input image (matplotlib's Agg canvas).

  grids = class_attention(maps, row, grid)   # per layer: [heads, rows, cols] of the class token
  grid = rollout(maps, row, grid)            # attention rollout across the layers [rows, cols]
  picture = render(image, panels)            # the image and each map overlaid on it, uint8 RGB
  picture = render_mistakes(images, predicted, true)   # misclassified images with their labels

At each eval (`write_eval`, called by monitoring/attention.py for an image sequence) one
validation image gets the picture `image_attention/class_token`: the class token's attention
over the patch grid for every head of the last layer, their mean, and attention rollout (Abnar
& Zuidema 2020: each layer's head-mean weights plus the identity for the residual path, rows
renormalised, multiplied from the first layer to the last; the class token's row read over the
patches). Each map is upsampled to the
image and drawn over it in a translucent colour map, every panel at least PANEL_PX pixels a
side, so an 8 x 8 digit is as readable as a 224 x 224 photo. With pooling 'gap' (no class
token) the query is the mean over the patches. `training/evaluation.py` draws the misclassified
images with `render_mistakes`.
"""

import numpy as np

PANEL_PX = 200
MAX_HEADS = 16       # panels of one picture beyond the image itself
DPI = 100


def _query(weights_NTS, cls):
  """The weights [N, S] of the class token (cls) or the mean over every query (gap)."""
  return weights_NTS[:, 0] if cls else weights_NTS.mean(axis=1)


def class_attention(maps, row, grid, cls=True):
  """[heads, rows, cols] per map (layer): the class token's weights over the patches."""
  rows, cols = grid
  return [_query(m.weights[row], cls)[:, int(cls):].reshape(-1, rows, cols) for m in maps]


def rollout(maps, row, grid, cls=True):
  """Attention rollout of the layers `maps` (in order) for one row, over the patch grid."""
  joint = None
  for m in maps:
    a = m.weights[row].mean(axis=0).astype(np.float64)
    a = a + np.eye(a.shape[0])
    a = a / a.sum(axis=-1, keepdims=True)
    joint = a if joint is None else a @ joint
  out = joint[0] if cls else joint.mean(axis=0)
  return out[int(cls):].reshape(grid)


def _as_rgb(image):
  """uint8 [H, W, C] pixels as an RGB float image in [0, 1] (grey repeated, alpha dropped)."""
  x = np.asarray(image, np.float32) / 255.0
  if x.ndim == 2:
    x = x[..., None]
  if x.shape[-1] in (1, 2):
    x = np.repeat(x[..., :1], 3, axis=-1)
  return x[..., :3]


def _figure(panels):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  cols = min(len(panels), 8)
  rows = -(-len(panels) // cols)
  side = PANEL_PX / DPI
  fig = Figure(figsize=(cols * side, rows * (side + 0.5) + 0.1), dpi=DPI)
  FigureCanvasAgg(fig)
  axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(panels))]
  return fig, axes


def _pixels(fig, title=''):
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(pad=0.4, h_pad=1.2, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if title else None)
  fig.canvas.draw()
  return np.array(np.asarray(fig.canvas.buffer_rgba())[:, :, :3])


def render(image, panels, title=''):
  """uint8 RGB picture: the image, then each (name, [rows, cols] map) drawn over it."""
  rgb = _as_rgb(image)
  height, width = rgb.shape[:2]
  fig, axes = _figure([('input', None)] + list(panels))
  for ax, (name, grid) in zip(axes, [('input', None)] + list(panels)):
    ax.imshow(rgb, interpolation='nearest', extent=(0, width, height, 0))
    if grid is not None:
      grid = np.asarray(grid, np.float32)
      ax.imshow(grid / max(float(grid.max()), 1e-9), cmap='inferno', alpha=0.6,
                interpolation='bilinear', extent=(0, width, height, 0), vmin=0, vmax=1)
    ax.set_title(name, fontsize=8)
    ax.set_axis_off()
  return _pixels(fig, title)


def render_mistakes(images, predicted, true):
  """uint8 RGB picture of misclassified images, each titled 'predicted P, true T'."""
  fig, axes = _figure(list(images))
  for ax, image, p, t in zip(axes, images, predicted, true):
    ax.imshow(_as_rgb(image), interpolation='nearest')
    ax.set_title(f'predicted {p}, true {t}', fontsize=8, color='firebrick')
    ax.set_axis_off()
  return _pixels(fig)


def write_eval(writer, step, maps, rows, hp):
  """The last layer's class-token attention and the rollout of the first eval image in `rows`
  (a batch; rows of weight 0 are padding) as `image_attention/*` pictures."""
  weights = np.asarray(rows.get('weight', np.ones(len(rows['image']))))
  real = np.flatnonzero(weights > 0)
  if not len(real) or not maps:
    return
  r, image = int(real[0]), np.asarray(rows['image'][int(real[0])])
  grid = (image.shape[0] // hp.patch_size, image.shape[1] // hp.patch_size)
  cls = hp.pooling == 'cls'
  last = class_attention(maps[-1:], r, grid, cls)[0][:MAX_HEADS]
  panels = [(f'head {h}', g) for h, g in enumerate(last)] + [('mean of heads', last.mean(0))]
  panels.append((f'rollout ({len(maps)} layers)', rollout(maps, r, grid, cls)))
  label = f', label {int(rows["label"][r])}' if 'label' in rows else ''
  query = 'class token' if cls else 'mean of the patches'
  writer.image(step, 'image_attention/class_token', render(
      image, panels, f'attention of the {query} over the patches: {maps[-1].name} per head and '
      f'rollout{label}'))
