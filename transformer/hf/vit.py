"""Hugging Face ViT (model_type 'vit': ViTModel, ViTForImageClassification) <-> our image model.

  spec, fields = config_fields(c, weights)       # config.json -> configs/vit.py + model keys
  values = config_json(hp)                        # our HParams -> config.json's ViT fields
  apply_processor(config, hf_dir)                 # preprocessor_config.json -> data / model keys
  write_processor(config, out)                    # ... and back

The parameters map through mapping.VIT. The image processor's numbers travel with the model:
its size becomes data.image_size (our preprocessing resizes to it, bilinear as ViTImageProcessor
does), its image_mean / image_std become model.image_mean / image_std (the model normalises
pixels / 255 with them: models/patches.py), so an imported checkpoint sees exactly the pixels it
was trained on, and export-hf writes them back. A processor our preprocessing cannot reproduce
(another resampling, another rescale factor, a non-square size) is refused in one line.
"""

import json
import math
import os

from transformer.errors import ConfigError
from transformer.models import patches

PROCESSOR = 'preprocessor_config.json'
BILINEAR = 2            # PIL.Image.BILINEAR: the resample our preprocessing uses


def _side(c, key, default):
  """A square size: an int, or [n, n]."""
  value = c(key, default, kind=(int if not isinstance(c.values.get(key), list) else list))
  if isinstance(value, list):
    if len(value) != 2 or value[0] != value[1]:
      c.bad(key, 'is not supported; only square images and patches')
    value = value[0]
  return int(value)


def config_fields(c, weights):
  """(family config, model fields) of a ViT config.json (hf_config.ARCHITECTURES['vit'])."""
  del weights
  c.require('qkv_bias', True, True)
  c.require('pooler_act', 'tanh', 'tanh')
  d_model = c('hidden_size')
  if c('pooler_output_size', d_model) != d_model:
    c.bad('pooler_output_size', f'is not supported (only hidden_size={d_model})')
  labels = c.values.get('id2label') or {}
  return 'configs/vit.py:b16', dict(
      family='encoder', vocab_size=0, num_layers=c('num_hidden_layers'), d_model=d_model,
      num_heads=c('num_attention_heads'), head_dim=0, d_ff=c('intermediate_size'),
      activation=c.activation('hidden_act', 'gelu'), norm_eps=c('layer_norm_eps', 1e-12),
      dropout_rate=c('hidden_dropout_prob', 0.0),
      attention_dropout_rate=c('attention_probs_dropout_prob', 0.0),
      patch_size=_side(c, 'patch_size', 16), image_size=_side(c, 'image_size', 224),
      num_channels=c('num_channels', 3), num_classes=max(len(labels), 2),
      image_mean=(0.5,) * c('num_channels', 3), image_std=(0.5,) * c('num_channels', 3),
      pooling='cls', positions='learned_2d', classifier_pooler=False, mlp_dropout=False,
      final_dropout=False)


def config_json(hp):
  """config.json's ViT fields of our model `hp` (architectures.hf_config_json)."""
  return dict(hidden_size=hp.d_model, num_hidden_layers=hp.num_layers,
              num_attention_heads=hp.num_heads, intermediate_size=hp.d_ff,
              hidden_act={'gelu': 'gelu', 'gelu_tanh': 'gelu_new'}[hp.activation],
              layer_norm_eps=hp.norm_eps, hidden_dropout_prob=hp.dropout_rate,
              attention_probs_dropout_prob=hp.attention_dropout_rate, image_size=hp.image_size,
              patch_size=hp.patch_size, num_channels=hp.num_channels, qkv_bias=True,
              encoder_stride=hp.patch_size, pooler_output_size=hp.d_model, pooler_act='tanh',
              initializer_range=hp.init_std)


def _read(path):
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path}: not a readable image processor config ({e})') from None
  if not isinstance(values, dict):
    raise ConfigError(f'{path}: not a JSON object')
  return values


def _refuse(path, key, value, why):
  raise ConfigError(f'{path}: "{key}": {value!r} {why}; our preprocessing resizes bilinearly to '
                    'a square and scales pixels by 1/255')


def apply_processor(config, hf_dir):
  """Set data.image_size and model.image_mean / image_std from `hf_dir`'s image processor
  (none there: the config.json's image size and mean / std 0.5)."""
  path = os.path.join(hf_dir, PROCESSOR)
  model, data = config.model, config.data
  data.image_size = model.image_size
  if not os.path.isfile(path):
    return
  values = _read(path)
  channels = model.num_channels
  if values.get('do_resize', True):
    size = values.get('size', {})
    sides = {size.get('height'), size.get('width')} if isinstance(size, dict) else {size}
    if len(sides) != 1 or not isinstance(next(iter(sides)), int):
      _refuse(path, 'size', size, 'is not a square size {"height": n, "width": n}')
    data.image_size = next(iter(sides))
    if values.get('resample', BILINEAR) != BILINEAR:
      _refuse(path, 'resample', values.get('resample'), 'is not bilinear (2)')
  if not values.get('do_rescale', True) or not math.isclose(
      values.get('rescale_factor', 1 / 255), patches.PIXEL_SCALE, rel_tol=1e-6):
    _refuse(path, 'rescale_factor', values.get('rescale_factor'), 'is not 1/255')
  normalise = values.get('do_normalize', True)
  for key, plain in (('image_mean', 0.0), ('image_std', 1.0)):
    value = values.get(key, [0.5] * channels) if normalise else [plain] * channels
    value = [value] * channels if isinstance(value, (int, float)) else value
    if len(value) != channels:
      _refuse(path, key, value, f'has not one value per channel ({channels})')
    model[key] = tuple(float(v) for v in value)


def write_processor(config, out):
  """`out`/preprocessor_config.json: the ViTImageProcessor our preprocessing matches."""
  size = int(config.data.get('image_size', 0) or config.model.image_size)
  values = dict(image_processor_type='ViTImageProcessor', do_resize=True,
                size={'height': size, 'width': size}, resample=BILINEAR, do_rescale=True,
                rescale_factor=patches.PIXEL_SCALE, do_normalize=True,
                image_mean=list(config.model.image_mean), image_std=list(config.model.image_std))
  with open(os.path.join(out, PROCESSOR), 'w') as f:
    json.dump(values, f, indent=2, sort_keys=True)
