"""objective=image_classification: seeded preprocessing, label smoothing, top-1 / top-5 accuracy,
weightless padding rows, and its one-line config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import config as config_lib
from transformer import objectives
from transformer.errors import ConfigError


def _objective(**data):
  config = config_lib.load('configs/vit.py:tiny', {f'data.{k}': str(v) for k, v in data.items()})
  return objectives.get(config, None)


def test_it_reads_images_and_labels_and_no_text():
  assert objectives.declared_fields('image_classification') == {
      'image': objectives.fields.IMAGE, 'label': objectives.fields.LABEL}
  assert not objectives.reads_text('image_classification')
  assert 'image_classification' in objectives.objectives_for('encoder')


def test_training_crops_and_flips_are_seeded_and_eval_takes_the_whole_image():
  obj = _objective(crop_scale=0.3, flip=True, image_size=16)
  pixels = np.arange(32 * 24, dtype=np.uint8).reshape(32, 24, 1)
  example = {'image': pixels, 'label': 3}
  one = obj.features(example, np.random.default_rng([0, 0, 5, 0]))
  again = obj.features(example, np.random.default_rng([0, 0, 5, 0]))
  np.testing.assert_array_equal(one['image'], again['image'])   # a resume sees the same pixels
  others = [obj.features(example, np.random.default_rng([0, 0, i, 0]))['image'] for i in range(8)]
  assert len({o.tobytes() for o in others}) > 1
  assert one['image'].shape == (16, 16, 1) and one['image'].dtype == np.uint8
  assert int(one['label']) == 3 and float(one['weight']) == 1.0
  whole = obj.eval_features(example, np.random.default_rng(1))['image']
  np.testing.assert_array_equal(whole, obj.eval_features(example, None)['image'])
  from PIL import Image
  want = np.asarray(Image.fromarray(pixels[..., 0]).resize((16, 16), Image.BILINEAR))
  np.testing.assert_array_equal(whole[..., 0], want)


def test_the_loss_smooths_labels_and_padding_rows_weigh_nothing():
  obj = _objective(label_smoothing=0.1)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 10)), jnp.float32)
  logits = logits.at[3].set(jnp.nan)       # an all-padding row at the end of an eval set
  batch = {'image': jnp.zeros((4, 8, 8, 1), jnp.uint8), 'label': jnp.asarray([1, 2, 3, 0]),
           'weight': jnp.asarray([1.0, 1.0, 1.0, 0.0])}
  loss, metrics = jax.jit(lambda b: obj.loss_and_metrics(lambda images, deterministic: logits,
                                                         b))(batch)
  logp = jax.nn.log_softmax(logits[:3])
  want = -(0.9 * logp[jnp.arange(3), jnp.asarray([1, 2, 3])] + 0.1 * logp.mean(-1))
  np.testing.assert_allclose(loss, want.mean(), rtol=1e-6)
  assert float(metrics['loss'][1]) == 3.0
  ranks = [int(jnp.sum(logits[i] > logits[i, label])) for i, label in enumerate([1, 2, 3])]
  assert float(metrics['accuracy'][0]) == sum(r == 0 for r in ranks)
  assert float(metrics['top5_accuracy'][0]) == sum(r < 5 for r in ranks)


def test_count_gives_images_patches_and_slots():
  obj = _objective()
  batch = {'weight': np.asarray([1, 1, 0, 0], np.float32)}
  assert obj.count(batch) == (2, 2 * 17, 4 * 17)


@pytest.mark.parametrize('data,key', [
    (dict(seq_len=10), 'data.seq_len=10'),
    (dict(image_size=9), 'data.image_size=9'),
    (dict(crop_scale=0.0), 'data.crop_scale=0.0'),
    (dict(label_smoothing=1.0), 'data.label_smoothing=1.0'),
])
def test_bad_keys_are_one_line_errors(data, key):
  with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
    _objective(**data)


def test_an_image_with_other_channels_names_the_source():
  obj = _objective()
  with pytest.raises(ConfigError, match=r'data\.source=digits.*3 channels.*num_channels=3'):
    obj.features({'image': np.zeros((8, 8, 3), np.uint8), 'label': 1}, None)
