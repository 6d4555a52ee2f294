"""Image sources: the embedded digits (fixed split), local folders `images:/path/<class>/*`, TFDS
image datasets by name; bad folders are one-line errors naming the path."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from transformer import config as config_lib
from transformer import objectives
from transformer.data import Pipeline, sources
from transformer.errors import ConfigError


def _config(source, **overrides):
  values = {'data.source': source, **{k: str(v) for k, v in overrides.items()}}
  return config_lib.load('configs/vit.py:tiny', values)


def _write(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)


def _folder(root, channels=1, per_class=6):
  rng = np.random.default_rng(0)
  for name in ('cat', 'ant', 'bee'):
    for i in range(per_class):
      shape = (10 + i, 12, 3) if channels == 3 else (10 + i, 12)
      _write(os.path.join(root, name, f'{i}.{"png" if i % 2 else "jpg"}'),
             rng.integers(0, 256, shape, dtype=np.uint8))
  return str(root)


def test_digits_have_a_fixed_split_of_uint8_images():
  pytest.importorskip('sklearn')
  source = sources.get_source(_config('digits'))
  train = list(tfds.as_numpy(source.dataset('train', ('image', 'label'))))
  valid = list(tfds.as_numpy(source.dataset('validation', ('image', 'label'))))
  assert (len(train), len(valid)) == (1498, 299)
  assert train[0]['image'].shape == (8, 8, 1) and train[0]['image'].dtype == np.uint8
  assert {int(x['label']) for x in valid} == set(range(10))
  assert max(int(x['image'].max()) for x in train) == 255
  again = list(tfds.as_numpy(source.dataset('validation', ('image', 'label'))))
  assert all((a['image'] == b['image']).all() for a, b in zip(valid, again))


def test_a_folder_is_one_class_per_subfolder(tmp_path):
  root = _folder(tmp_path / 'images')
  source = sources.get_source(_config(f'images:{root}'))
  assert source.classes == ['ant', 'bee', 'cat']
  train = list(tfds.as_numpy(source.dataset('train', ('image', 'label'))))
  valid = list(tfds.as_numpy(source.dataset('validation', ('image', 'label'))))
  assert len(train) + len(valid) == 18 and valid
  assert {x['image'].shape[0] for x in train} > {10}   # sizes differ; the objective resizes
  objective = objectives.get(_config(f'images:{root}'), None)
  pipeline = Pipeline(_config(f'images:{root}'), objective, None, source=source)
  batch = next(pipeline.iterator())
  assert batch['image'].shape == (64, 8, 8, 1) and batch['image'].dtype == np.uint8
  assert set(np.unique(batch['label'])) <= {0, 1, 2} and batch['weight'].sum() == 64


def test_an_rgb_folder_trains_an_rgb_model(tmp_path):
  root = _folder(tmp_path / 'rgb', channels=3, per_class=2)
  config = _config(f'images:{root}', **{'model.num_channels': 3,
                                        'model.image_mean': '(0.5,0.5,0.5)',
                                        'model.image_std': '(0.5,0.5,0.5)'})
  source = sources.get_source(config)
  assert next(iter(tfds.as_numpy(source.dataset('train', ('image', 'label')))))['image'].shape[-1] == 3


def test_bad_folders_are_one_line_errors_naming_the_path(tmp_path):
  empty = tmp_path / 'empty'
  (empty / 'cat').mkdir(parents=True)
  (empty / 'cat' / 'notes.txt').write_text('no images here')
  with pytest.raises(ConfigError, match=f'no .*images in {empty}'):
    sources.get_source(_config(f'images:{empty}'))
  broken = _folder(tmp_path / 'broken', per_class=2)
  bad = os.path.join(broken, 'bee', 'torn.png')
  with open(bad, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n not really')
  with pytest.raises(ConfigError, match=f'{bad} is not a readable image'):
    sources.get_source(_config(f'images:{broken}'))
  rgb = _folder(tmp_path / 'rgb', channels=3, per_class=2)
  with pytest.raises(ConfigError, match=rf'{rgb}/ant/0.jpg has 3 channels, the model 1; '
                     r'set --config.model.num_channels=3'):
    sources.get_source(_config(f'images:{rgb}'))
  with pytest.raises(ConfigError, match=f'{tmp_path}/nowhere is not a directory'):
    sources.get_source(_config(f'images:{tmp_path}/nowhere'))
  with pytest.raises(ConfigError, match=r'model\.num_classes=2.*3 classes'):
    sources.get_source(_config(f'images:{rgb}', **{'model.num_classes': 2}))


def test_tfds_image_datasets_by_name(tmp_path):
  config = _config('mnist', **{'data.data_dir': str(tmp_path), 'model.image_size': 28,
                               'data.image_size': 28, 'model.patch_size': 7,
                               'train.batch_size': 4})
  assert config.data.seq_len == 17
  with tfds.testing.mock_data(num_examples=6):
    objective = objectives.get(config, None)
    batch = next(Pipeline(config, objective, None, split='eval').iterator())
  assert batch['image'].shape == (4, 28, 28, 1) and batch['label'].shape == (4,)
  assert sources.KNOWN['cifar10'].splits == {'validation': 'test'}
  assert {'imagenette', 'imagenet2012'} <= set(sources.KNOWN)
