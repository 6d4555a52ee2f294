"""Fixtures shared by the data tests: a prepared embedded corpus, small tokenizers, stand-ins.

The real objectives are written elsewhere; these stand-ins have the attributes of the objective
contract (head, example_fields, stream_lengths, packable, text_chunk_len, features).
"""

import os

import numpy as np
import pytest

from configs import common
import transformer.data as data_lib
from transformer.data import stdlib_corpus

EOS = 1


def make_config(tmp_dir, **data):
  """A base config whose data lives in `tmp_dir`, with `data` overrides."""
  c = common.base_config()
  c.data.data_dir = str(tmp_dir)
  c.data.vocab_size = 600
  c.data.tokenizer_train_examples = 1500
  c.train.batch_size = 4
  for key, value in data.items():
    c.data[key] = value
  return c


class LMObjective:
  """Decoder LM stand-in: 'targets' = chunk + [eos]; per-token 'targets_mask' uses the rng."""
  head = 'lm'
  example_fields = ('text',)
  packable = True

  def __init__(self, length=32, random_extra=False):
    self.stream_lengths = {'targets': length}
    self.text_chunk_len = length - 1
    self.random_extra = random_extra

  def features(self, example, rng):
    targets = np.concatenate([example['text'], [EOS]]).astype(np.int32)
    out = {'targets': targets}
    if self.random_extra:
      out['targets_mask'] = (rng.random(len(targets)) < 0.5).astype(np.int32)
    return out


class Seq2SeqObjective:
  head = 'lm'
  example_fields = ('inputs', 'targets')
  packable = True
  text_chunk_len = None

  def __init__(self, inputs_len=24, targets_len=16):
    self.stream_lengths = {'inputs': inputs_len, 'targets': targets_len}

  def features(self, example, rng):
    del rng
    return {'inputs': np.append(example['inputs'], EOS).astype(np.int32),
            'targets': np.append(example['targets'], EOS).astype(np.int32)}


class ClassifyObjective:
  head = 'classification'
  example_fields = ('text', 'label')
  packable = False
  text_chunk_len = None

  def __init__(self, length=16):
    self.stream_lengths = {'inputs': length}

  def features(self, example, rng):
    del rng
    return {'inputs': np.append(example['text'], EOS).astype(np.int32),
            'label': np.int32(example['label'])}


@pytest.fixture(scope='session')
def stdlib_dir(tmp_path_factory):
  """A data_dir with python_stdlib/text prepared (the real corpus, once per session)."""
  path = tmp_path_factory.mktemp('tfds')
  data_lib.get_source(make_config(path, source='python_stdlib/text'))
  return path


@pytest.fixture(scope='session')
def english_file(tmp_path_factory):
  """A text file of real English lines (the language reference), for text: sources."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  lines = [line.strip() for t in sorted(topics.topics) for line in topics.topics[t].splitlines()]
  lines = [line for line in lines if len(line) > 30][:3000]
  path = tmp_path_factory.mktemp('text') / 'reference.txt'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return path


@pytest.fixture(scope='session')
def small_tokenizer(tmp_path_factory, english_file):
  """A 400-piece tokenizer trained on `english_file` (a few seconds)."""
  c = make_config(tmp_path_factory.mktemp('tok'), source=f'text:{english_file}', vocab_size=400,
                  tokenizer_train_examples=2000)
  return data_lib.get_tokenizer(c)


@pytest.fixture
def small_stdlib(monkeypatch):
  """Point the stdlib corpus at one small package so a builder prepares in a second."""
  import json  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(stdlib_corpus, 'STDLIB_ROOT', os.path.dirname(json.__file__))
