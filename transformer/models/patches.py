"""The image model's tokens: patches of the image, embedded (Dosovitskiy et al. 2021, ViT).

  embed = PatchEmbed(hp, rngs=rngs)        # the `token_embed` of a model with hp.patch_size > 0
  x_BLD = embed(images_BHWC)               # uint8 pixels -> [class token,] patches + positions
  pooled_BD = pool(x_BLD, hp)              # the class token's output, or the mean of the patches

An image [H, W, C] of uint8 pixels is normalised in the model ((x / 255 - image_mean) /
image_std per channel, the numbers an image processor carries), cut into (H / p) x (W / p)
patches of p x p x C pixels, row by row, and each patch is mapped linearly to d_model
(`projection`, a kernel [p, p, C, d_model]: the same map as the paper's convolution with
kernel p and stride p, whose HWIO kernel it is). With pooling 'cls' a learned class token
goes first. The positions are a learned table over the patch grid of a model.image_size
image (plus the class token's row); an image of another size (fine-tuning at a higher
resolution) reads the table resized in 2-D over its own grid (bicubic; the class token's row
unchanged), so the same parameters serve every resolution.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from transformer.models import layers
from transformer.models.hparams import HParams

PIXEL_SCALE = 1 / 255    # uint8 pixels -> [0, 1] (Hugging Face's rescale_factor)


def grid(hp: HParams):
  """Patches per side of the model.image_size image the position table is for."""
  return hp.image_size // hp.patch_size


def sequence_length(image_size, hp: HParams):
  """Positions of an image_size x image_size image: its patches and the class token."""
  return (image_size // hp.patch_size) ** 2 + (hp.pooling == 'cls')


def interpolate(table_GGD, rows, cols):
  """A [G, G, D] position table resized to [rows, cols, D] (bicubic); the same table when
  the grid is the same."""
  if table_GGD.shape[:2] == (rows, cols):
    return table_GGD
  resized = jax.image.resize(table_GGD.astype(jnp.float32), (rows, cols, table_GGD.shape[-1]),
                             method='bicubic')
  return resized.astype(table_GGD.dtype)


class PatchEmbed(nnx.Module):
  """Pixels -> [class token,] patch embeddings + positions (see the module docstring)."""

  def __init__(self, hp: HParams, *, rngs: nnx.Rngs):
    self.hp = hp
    p, c, d = hp.patch_size, hp.num_channels, hp.d_model
    self.projection = layers.Dense((p, p, c), (d,), ('patch_height', 'patch_width', 'channels',
                                                     'embed'),
                                   use_bias=True, init_std=hp.std(None), dtype=hp.compute_dtype,
                                   param_dtype=hp.params_dtype, kernels=hp.kernels, rngs=rngs)
    cls = hp.pooling == 'cls'
    self.class_token = (layers.logical_param(jnp.zeros((1, d), hp.params_dtype),
                                             ('length', 'embed')) if cls else None)
    self.position_embedding = layers.param(rngs, (grid(hp) ** 2 + cls, d), ('length', 'embed'),
                                           hp.std(1.0), hp.params_dtype)

  def normalise(self, images_BHWC):
    """uint8 (or already scaled float) pixels -> float32 normalised per channel."""
    x = images_BHWC.astype(jnp.float32) * PIXEL_SCALE
    return (x - jnp.asarray(self.hp.image_mean)) / jnp.asarray(self.hp.image_std)

  def patches(self, images_BHWC):
    """The projected patches [B, rows * cols, D] in row order, before positions."""
    b, h, w, c = images_BHWC.shape
    p = self.hp.patch_size
    if h % p or w % p or c != self.hp.num_channels:
      raise ValueError(f'images of shape {images_BHWC.shape[1:]} do not cut into {p} x {p} '
                       f'patches of {self.hp.num_channels} channels')
    x = self.normalise(images_BHWC).reshape(b, h // p, p, w // p, p, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))           # [B, rows, cols, p, p, C]
    return self.projection(x).reshape(b, (h // p) * (w // p), -1)

  def __call__(self, images_BHWC):
    b, h, w, _ = images_BHWC.shape
    p, cls = self.hp.patch_size, self.class_token is not None
    table = self.position_embedding.value
    g = grid(self.hp)
    patch_table = interpolate(table[cls:].reshape(g, g, -1), h // p, w // p)
    x = self.patches(images_BHWC)
    x = x + patch_table.reshape(-1, x.shape[-1]).astype(x.dtype)
    if cls:
      token = (self.class_token.value + table[:1]).astype(x.dtype)
      x = jnp.concatenate([jnp.broadcast_to(token[None], (b, 1, x.shape[-1])), x], axis=1)
    return x


def pool(x_BLD, hp: HParams):
  """The vector the classifier reads: the class token's output (pooling 'cls') or the mean
  over the patches (pooling 'gap')."""
  return x_BLD[:, 0] if hp.pooling == 'cls' else jnp.mean(x_BLD, axis=1)
