"""setup.prepare reads the objective's declared fields: a tokenizer (and a vocabulary) only where
a field is text. A registered image objective validates without data.vocab_size, prepares with no
tokenizer built and its run's pipeline yields image batches; text runs keep theirs."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from transformer import config as config_lib
from transformer import data, objectives
from transformer.data import fields
from transformer.errors import ConfigError
from transformer.training import setup


class FakeImageClassification(objectives.Objective):
  """An image objective for the test: the image passed through, one label per example."""
  name = 'fake_image'
  head = 'classification'
  fields = {'image': fields.IMAGE, 'label': fields.LABEL}
  families = ('encoder',)

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.packable = False

  def features(self, example, rng=None):
    del rng
    return {'image': example['image'].astype(np.float32) / 255, 'label': np.int32(example['label'])}


@pytest.fixture
def image_config(monkeypatch, tmp_path):
  monkeypatch.setitem(objectives.REGISTRY, FakeImageClassification.name, FakeImageClassification)
  c = config_lib.load_file('configs/bert.py:tiny')
  c.objective = 'fake_image'
  c.model.vocab_size, c.data.vocab_size, c.model.num_classes = 0, 0, 10
  c.data.update(source='mnist', pack=False, train_split='train', eval_split='test',
                data_dir=str(tmp_path / 'tfds'))
  c.train.batch_size = 4
  return c


def test_the_example_fields_are_the_names_of_the_declared_fields(image_config):
  del image_config   # registers the objective
  assert FakeImageClassification.example_fields == ('image', 'label')
  assert not objectives.reads_text('fake_image') and objectives.reads_text('classification')


def test_an_image_objective_prepares_with_no_tokenizer(image_config, monkeypatch, tmp_path):
  def no_tokenizer(*args, **kwargs):
    raise AssertionError('a tokenizer was built for an objective without text')
  monkeypatch.setattr(data, 'get_tokenizer', no_tokenizer)
  config_lib.validate(image_config)   # no data.vocab_size needed
  with tfds.testing.mock_data(num_examples=8):
    run = setup.prepare(image_config, str(tmp_path / 'runs'))
    batch = next(run.pipeline('train').iterator())
  assert run.tokenizer is None and run.config.model.vocab_size == 0
  assert batch['image'].shape == (4, 28, 28, 1) and batch['label'].shape == (4,)
  assert not os.path.exists(tmp_path / 'runs')


def test_an_image_objective_refuses_packing_before_anything_is_written(image_config, tmp_path):
  image_config.data.pack = True
  with pytest.raises(ConfigError, match=r"^`data.pack=True`: objective fake_image reads the "
                     r"image field 'image', which is never packed; set --config.data.pack=False$"):
    setup.prepare(image_config, str(tmp_path / 'runs'))
  assert not os.path.exists(tmp_path / 'runs')


def test_a_text_model_still_needs_a_vocabulary_with_the_same_message():
  c = config_lib.load_file('configs/bert.py:tiny')
  c.data.vocab_size = 0
  with pytest.raises(ConfigError, match=r'^`model.vocab_size=0`: must be a positive integer; set '
                     'it, or leave 0 and let training take it from the tokenizer$'):
    config_lib.validate(c)
