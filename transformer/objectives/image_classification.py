"""Image classification (ViT): cross-entropy with label smoothing, top-1 and top-5 accuracy.

A raw example is {'image': [H, W] or [H, W, C] pixels, 'label': class id} (data/fields.py:
IMAGE, LABEL). `features` prepares each image on the host with numpy and PIL, seeded by the
example's rng (data/pipeline.py), so a resumed run sees the same pixels:

  train  a random crop of area in [data.crop_scale, 1] of the image and aspect ratio in
         [3/4, 4/3] (Inception's crop; crop_scale 1: the whole image), resized to
         data.image_size x data.image_size (bilinear, as Hugging Face's image processor does),
         flipped left-right with probability 1/2 when data.flip
  eval   the whole image resized

and keeps uint8 pixels [S, S, C]; the model scales and normalises them (models/patches.py:
model.image_mean / image_std, the numbers an imported image processor carries). Each example
has weight 1; the all-padding rows that end an eval set weigh 0 in the loss and the metrics.
Images are never packed: one image per row, data.seq_len = its patches (+ the class token).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from transformer.data import fields as fields_lib
from transformer.errors import ConfigError
from transformer.models import patches
from transformer.models.hparams import HParams
from transformer.objectives import base

TOP_K = 5


@nnx.jit
def _predicted(model, images):
  return jnp.argmax(model(images, deterministic=True), axis=-1)


class ImageClassification(base.Objective):
  """Cross-entropy on a [B, num_classes] head against the scalar 'label' of an image."""

  name = 'image_classification'
  head = 'classification'
  fields = {'image': fields_lib.IMAGE, 'label': fields_lib.LABEL}
  families = ('encoder',)
  units = ('images', 'patches')   # what `count` counts (monitoring/perf.py)

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.packable = False
    self.hp = HParams.from_config(config.model, vocabulary=False)
    if not self.hp.patch_size:
      raise ConfigError('`model.patch_size=0`: image_classification needs an image model; '
                        'start from configs/vit.py')
    self.num_classes = self.hp.num_classes
    data = config.data
    self.image_size = int(data.get('image_size', 0) or self.hp.image_size)
    self.crop_scale = float(data.get('crop_scale', 1.0))
    self.flip = bool(data.get('flip', False))
    self.smoothing = float(data.get('label_smoothing', 0.0))
    self._check(data)
    self.patches_per_image = patches.sequence_length(self.image_size, self.hp)
    self.num_samples = int(config.log.samples)

  def _check(self, data):
    hp, size = self.hp, self.image_size
    if size % hp.patch_size:
      raise ConfigError(f'`data.image_size={size}`: not a multiple of model.patch_size='
                        f'{hp.patch_size}; use e.g. {size // hp.patch_size * hp.patch_size}')
    want = patches.sequence_length(size, hp)
    if self.seq_len != want:
      raise ConfigError(f'`data.seq_len={self.seq_len}`: a {size}x{size} image in '
                        f'{hp.patch_size}x{hp.patch_size} patches (pooling {hp.pooling}) is '
                        f'{want} positions; set --config.data.seq_len={want}')
    if not 0 < self.crop_scale <= 1:
      raise ConfigError(f'`data.crop_scale={self.crop_scale}`: must lie in (0, 1]; 1 takes '
                        'the whole image, e.g. 0.08 is Inception\'s crop')
    if not 0 <= self.smoothing < 1:
      raise ConfigError(f'`data.label_smoothing={self.smoothing}`: must lie in [0, 1)')

  def _crop(self, image, rng):
    """A random crop [h0:h0+h, w0:w0+w] of area in [crop_scale, 1], aspect in [3/4, 4/3]."""
    height, width = image.shape[:2]
    area = height * width * rng.uniform(self.crop_scale, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    h = int(np.clip(round(np.sqrt(area / aspect)), 1, height))
    w = int(np.clip(round(np.sqrt(area * aspect)), 1, width))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    return image[top:top + h, left:left + w]

  def prepare(self, image, rng=None):
    """uint8 pixels [S, S, C] of one raw image (see the module docstring); rng None: eval."""
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] != self.hp.num_channels:
      raise ConfigError(f'`data.source={self.config.data.source}`: an image has '
                        f'{image.shape[-1]} channels, the model {self.hp.num_channels}; set '
                        f'--config.model.num_channels={image.shape[-1]} or convert the images')
    if image.dtype != np.uint8:
      image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    if rng is not None and self.crop_scale < 1:
      image = self._crop(image, rng)
    if image.shape[:2] != (self.image_size, self.image_size):
      pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
      pil = pil.resize((self.image_size, self.image_size), Image.BILINEAR)
      image = np.asarray(pil).reshape(self.image_size, self.image_size, -1)
    if rng is not None and self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return np.ascontiguousarray(image, np.uint8)

  def features(self, example, rng=None, *, augment=True):
    """A training example (randomly cropped and flipped as data.* says); `eval_features`: the
    whole image."""
    label = int(example['label'])
    if not 0 <= label < self.num_classes:
      raise ConfigError(f'`model.num_classes={self.num_classes}`: {self.config.data.source} '
                        f'has label {label}; set it to the number of classes of the data')
    image = self.prepare(example['image'], base.as_rng(rng) if augment else None)
    return {'image': image, 'label': np.int32(label), 'weight': np.float32(1.0)}

  def eval_features(self, example, rng=None):
    return self.features(example, rng, augment=False)

  def loss_and_metrics(self, model, batch, *, deterministic=True):
    logits_BC = model(batch['image'], deterministic=deterministic).astype(jnp.float32)
    labels_B = batch['label'].astype(jnp.int32)
    weights_B = batch['weight'].astype(jnp.float32)
    logp_BC = jax.nn.log_softmax(logits_BC)
    true_B = -jnp.take_along_axis(logp_BC, labels_B[:, None], axis=-1)[:, 0]
    xent_B = (1 - self.smoothing) * true_B - self.smoothing * jnp.mean(logp_BC, axis=-1)
    keep_B = weights_B != 0   # padding is selected away: a NaN there changes nothing
    count = jnp.sum(weights_B)
    total = jnp.sum(jnp.where(keep_B, xent_B * weights_B, 0.0))
    rank_B = jnp.sum(logits_BC > jnp.take_along_axis(logits_BC, labels_B[:, None], -1), -1)
    metrics = {'loss': (total, count),
               'accuracy': (jnp.sum(jnp.where(rank_B == 0, weights_B, 0.0)), count)}
    if self.num_classes > TOP_K:
      metrics['top5_accuracy'] = (jnp.sum(jnp.where(rank_B < TOP_K, weights_B, 0.0)), count)
    if self.z_loss:
      log_z = jax.nn.logsumexp(logits_BC, axis=-1)
      z_sum = jnp.sum(jnp.where(keep_B, self.z_loss * jnp.square(log_z) * weights_B, 0.0))
      metrics['z_loss'] = (z_sum, count)
      total = total + z_sum
    return total / jnp.maximum(count, 1.0), metrics

  def classify(self, model, batch):
    """(predicted class [B], true class [B], weight [B]) of a batch, as numpy."""
    return (np.asarray(_predicted(model, jnp.asarray(batch['image']))),
            np.asarray(batch['label']), np.asarray(batch['weight']))

  def predict(self, model, batch, tokenizer=None, *, max_new_tokens=0):
    """Predicted and true label of up to `log.samples` eval images (the pictures show them)."""
    del tokenizer, max_new_tokens
    rows = {k: np.asarray(v)[:self.num_samples] for k, v in batch.items()}
    guess, truth, weight = self.classify(model, rows)
    return [dict(input=f'image {i}', prediction=str(int(guess[i])), reference=str(int(truth[i])))
            for i in range(len(truth)) if weight[i] > 0]

  def count(self, batch):
    """(images, patches, patch slots) of a host batch: what perf/images_per_sec,
    perf/patches_per_sec and the fill figure count (padding rows hold no image)."""
    images = int(np.count_nonzero(np.asarray(batch['weight'])))
    rows = int(np.shape(batch['weight'])[0])
    return images, images * self.patches_per_image, rows * self.patches_per_image
