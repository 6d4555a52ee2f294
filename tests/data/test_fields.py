"""The input contract (data/fields.py): fields of a declared kind travel from the raw examples to
the batches by their kind, with no tokenizer where no field is text."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.data.conftest import make_config
from transformer import objectives
from transformer.data import fields, packing
from transformer.data.pipeline import Pipeline
from transformer.errors import ConfigError


class ImageObjective:
  """An image classifier's stand-in: the image scaled to [0, 1], passed through; its label."""
  name = 'fake_image'
  head = 'classification'
  fields = {'image': fields.IMAGE, 'label': fields.LABEL}
  example_fields = ('image', 'label')
  packable = False
  text_chunk_len = None
  stream_lengths = {}

  def features(self, example, rng):
    del rng
    return {'image': example['image'].astype(np.float32) / 255, 'label': np.int32(example['label'])}


def _mnist_config(tmp_path, **data):
  return make_config(tmp_path, **{'source': 'mnist', 'vocab_size': 0, 'pack': False,
                                  'train_split': 'train', 'eval_split': 'test', **data})


def test_every_objective_declares_its_fields_with_a_kind():
  declared = {name: fields.declared(cls) for name, cls in objectives.REGISTRY.items()}
  assert declared['classification'] == {'text': fields.TEXT, 'label': fields.LABEL}
  assert declared['seq2seq'] == {'inputs': fields.TEXT, 'targets': fields.TEXT}
  assert declared['image_classification'] == {'image': fields.IMAGE, 'label': fields.LABEL}
  assert all(d == {'text': fields.TEXT} for n, d in declared.items()
             if n not in ('classification', 'seq2seq', 'image_classification'))
  assert all(fields.reads_text(d) == (n != 'image_classification') for n, d in declared.items())
  assert all(cls.example_fields == tuple(cls.fields) for cls in objectives.REGISTRY.values())


def test_bare_field_names_read_as_their_usual_kinds():
  assert fields.as_kinds(('text', 'label')) == {'text': fields.TEXT, 'label': fields.LABEL}
  assert not fields.reads_text({'image': fields.IMAGE, 'label': fields.LABEL})


def test_an_image_objective_runs_through_the_pipeline_with_no_tokenizer(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    train = Pipeline(_mnist_config(tmp_path), ImageObjective(), tokenizer=None, split='train')
    index, raw = next(train.raw_examples())
    assert raw['image'].shape == (28, 28, 1) and raw['image'].dtype == np.uint8
    assert isinstance(raw['label'], int)
    batch = next(train.iterator())
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (4, 28, 28, 1) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
    assert 0 <= batch['image'].min() and batch['image'].max() <= 1
    evaluated = list(Pipeline(_mnist_config(tmp_path), ImageObjective(), tokenizer=None,
                              split='eval').iterator())
  assert len(evaluated) == 3 and not evaluated[-1]['image'][2:].any()   # 10 = 4 + 4 + 2
  assert not os.path.exists(os.path.join(tmp_path, 'tokenizers'))


def test_an_image_field_refuses_packing_in_one_line(tmp_path):
  with pytest.raises(ConfigError) as e:
    Pipeline(_mnist_config(tmp_path, pack=True), ImageObjective(), tokenizer=None,
             source=object())
  assert str(e.value).startswith('`data.pack=True`: ') and "'image'" in str(e.value)
  assert '\n' not in str(e.value) and 'data.pack=False' in str(e.value)
  assert not os.listdir(tmp_path)


def test_passed_features_keep_their_shape_through_truncate_and_build():
  example = {'inputs': np.arange(10, dtype=np.int32), 'image': np.ones((2, 3), np.uint8),
             'label': np.int32(1)}
  with pytest.raises(ValueError, match='neither a stream'):
    packing.truncate(example, {'inputs': 4})
  cut = packing.truncate(example, {'inputs': 4}, passed=('image',))
  assert cut['inputs'].tolist() == [0, 1, 2, 3] and cut['image'].shape == (2, 3)
  batch = packing.build([[cut]], {'inputs': 4}, 2)
  assert batch['image'].shape == (2, 2, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].tolist() == [1, 0] and batch['inputs_segment_ids'][0].tolist() == [1] * 4
