"""Accounting and the attention pictures read the objective's declared fields (data/fields.py):
what one position is (a token of text, a patch of an image), whether there is a vocabulary, and
what an axis is labelled with."""

import pytest

from transformer import config as config_lib
from transformer import objectives
from transformer.data import fields
from transformer.monitoring import accounting
from transformer.monitoring.attention import axis_labels
from tests.training.test_setup import FakeImageClassification


@pytest.fixture
def image_config(monkeypatch):
  monkeypatch.setitem(objectives.REGISTRY, FakeImageClassification.name, FakeImageClassification)
  c = config_lib.load_file('configs/bert.py:tiny')
  c.objective = 'fake_image'
  c.model.vocab_size, c.data.vocab_size, c.model.num_classes = 0, 0, 10
  return c


def test_a_model_without_text_is_summarised_without_a_vocabulary(image_config):
  assert accounting.unit(image_config) == ('patch', 'patches')
  assert accounting.head_for(image_config) == 'classification'
  counts = accounting.count_params(accounting.abstract_model(image_config))
  text = accounting.format_table(image_config, param_counts=counts)
  assert 'FLOPs per patch' in text and 'output patches per example' in text
  assert 'B/patch' in text and 'token' not in text


def test_text_models_keep_tokens():
  c = config_lib.load_file('configs/bert.py:tiny')
  assert accounting.unit(c) == ('token', 'tokens') and accounting.head_for(c) == 'lm'
  text = accounting.format_table(c)
  assert 'FLOPs per token' in text and 'output tokens per example' in text and 'B/token' in text


def test_axis_labels_come_from_the_kind(small_pieces=('▁a', 'b', '<mask>')):
  class Pieces:
    def id_to_piece(self, i):
      return small_pieces[i]
  assert axis_labels(fields.TEXT, Pieces(), [0, 1, 2]) == list(small_pieces)
  assert axis_labels(fields.IMAGE, None, [0, 1, 2]) is None
